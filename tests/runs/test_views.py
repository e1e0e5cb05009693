import io
import zipfile
from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from apps.agents import events as ev
from apps.runs import services
from apps.runs.models import Artifact, Run
from apps.runs.recorder import RunRecorder
from tests.projects.factories import PASSWORD, make_project

S = Run.Status


@pytest.fixture(autouse=True)
def no_celery():
    with mock.patch("apps.runs.tasks.execute_run_task.apply_async", autospec=True) as apply:
        yield apply


@pytest.fixture
def as_alice(client, alice):
    client.login(username="alice", password=PASSWORD)
    return client


@pytest.fixture
def as_bob(client, bob):
    client.login(username="bob", password=PASSWORD)
    return client


@pytest.fixture
def finished_run(project, alice):
    run = services.start_run(project=project, user=alice, task="make test", overrides={})
    run = services.claim_run(run_id=run.pk, lease_owner="w")
    run = services.transition(run, to=S.RUNNING, lease_owner="w")
    recorder = RunRecorder(run, lease_owner="w", log_limit_bytes=10**7)
    recorder.record(ev.CommandStarted(index=0, command="make test"))
    for i in range(1, 1501):
        colour = "\x1b[31m" if i % 500 == 0 else ""
        recorder.record(ev.LogOutput(stream="stdout", text=f"{colour}line {i} <b>\x1b[0m\n"))
    recorder.record_event("stats", {"cpu": 10, "memory_mb": 20, "memory_limit_mb": 256})
    recorder.record_event(
        "files", {"entries": [["out", 0, True], ["out/r.html", 30, False]], "total": 2}
    )
    recorder.close()
    Artifact.objects.create(
        run=run, path="out/r.html", size=30, sha256="0" * 64, content=b"<script>alert(1)</script>"
    )
    return services.transition(run, to=S.SUCCEEDED, reason="completed", lease_owner="w")


def run_urls(run):
    artifact = run.artifacts.get()
    return [
        ("get", reverse("runs:detail", args=[run.pk])),
        ("get", reverse("runs:header", args=[run.pk])),
        ("get", reverse("runs:files", args=[run.pk])),
        ("get", reverse("runs:log_lines", args=[run.pk])),
        ("get", reverse("runs:log_search", args=[run.pk]) + "?q=line"),
        ("get", reverse("runs:log_raw", args=[run.pk])),
        ("get", reverse("runs:artifacts_zip", args=[run.pk])),
        ("get", reverse("runs:artifact_view", args=[run.pk, artifact.pk])),
        ("get", reverse("runs:artifact_download", args=[run.pk, artifact.pk])),
        ("get", reverse("runs:launch", args=[run.project_id]) + f"?from={run.pk}"),
        ("post", reverse("runs:cancel", args=[run.pk])),
        ("post", reverse("runs:rerun", args=[run.pk])),
    ]


def test_every_run_url_works_for_the_owner(as_alice, finished_run):
    for method, url in run_urls(finished_run):
        response = getattr(as_alice, method)(url)
        assert response.status_code in (200, 302), url


def test_every_run_url_is_404_for_a_stranger_and_changes_nothing(as_bob, finished_run):
    for method, url in run_urls(finished_run):
        assert getattr(as_bob, method)(url).status_code == 404, url
    assert Run.objects.count() == 1


def test_every_run_url_sends_anonymous_users_to_login(client, finished_run):
    for method, url in run_urls(finished_run):
        response = getattr(client, method)(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), url


def test_the_run_page_renders_the_tail_escaped_and_coloured(as_alice, finished_run):
    content = as_alice.get(reverse("runs:detail", args=[finished_run.pk])).content.decode()
    assert 'id="L1500"' in content and 'id="L501"' in content and 'id="L500"' not in content
    assert '<span class="a-fg-1">line 1500 &lt;b&gt;</span>' in content
    assert "<b>" not in content.split('id="log-lines"')[1].split("</section>")[0]
    assert f'data-after="{finished_run.last_seq}"' in content
    assert 'data-first-line="501"' in content
    assert "All commands succeeded" in content


def test_log_lines_api_pages_backwards_and_windows(as_alice, finished_run):
    url = reverse("runs:log_lines", args=[finished_run.pk])
    data = as_alice.get(url, {"before": 501, "limit": 100}).json()
    assert [line[0] for line in data["lines"]] == list(range(401, 501))
    assert data["lines"][0][3] == "line 401 <b>\x1b[0m" and data["total"] == 1500
    data = as_alice.get(url, {"from": 1490, "limit": 100}).json()
    assert [line[0] for line in data["lines"]] == list(range(1490, 1501))
    assert as_alice.get(url, {"before": "x"}).status_code == 400


def test_search_covers_the_whole_log(as_alice, finished_run):
    url = reverse("runs:log_search", args=[finished_run.pk])
    content = as_alice.get(url, {"q": "LINE 1000 "}).content.decode()
    assert 'data-jump-line="1000"' in content and "<strong>1</strong> matching line" in content
    assert "No line matches" in as_alice.get(url, {"q": "nothing-like-this"}).content.decode()


def test_raw_log_and_artifacts_download_as_inert_attachments(as_alice, finished_run):
    raw = as_alice.get(reverse("runs:log_raw", args=[finished_run.pk]))
    body = b"".join(raw.streaming_content).decode()
    assert body.count("\n") == 1500 and body.startswith("line 1 <b>")
    artifact = finished_run.artifacts.get()
    for response in (
        raw,
        as_alice.get(reverse("runs:artifact_download", args=[finished_run.pk, artifact.pk])),
        as_alice.get(reverse("runs:artifacts_zip", args=[finished_run.pk])),
    ):
        assert response["Content-Disposition"].startswith("attachment")
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Content-Security-Policy"] == "sandbox"
    download = as_alice.get(reverse("runs:artifact_download", args=[finished_run.pk, artifact.pk]))
    assert download["Content-Type"] == "application/octet-stream"  # never text/html
    archive = zipfile.ZipFile(
        io.BytesIO(
            b"".join(
                as_alice.get(
                    reverse("runs:artifacts_zip", args=[finished_run.pk])
                ).streaming_content
            )
        )
    )
    assert archive.read("out/r.html") == b"<script>alert(1)</script>"
    view = as_alice.get(reverse("runs:artifact_view", args=[finished_run.pk, artifact.pk]))
    assert "&lt;script&gt;" in view.content.decode()


def test_files_panel_links_captured_files(as_alice, finished_run):
    content = as_alice.get(reverse("runs:files", args=[finished_run.pk])).content.decode()
    artifact = finished_run.artifacts.get()
    assert reverse("runs:artifact_view", args=[finished_run.pk, artifact.pk]) in content
    assert "r.html" in content


def test_launch_form_re_renders_errors_and_launches(
    as_alice, project, no_celery, django_capture_on_commit_callbacks
):
    url = reverse("runs:launch", args=[project.pk])
    response = as_alice.post(url, {"kind": "script", "task": "", "memory_mb": "999999"})
    assert response.status_code == 400
    content = response.content.decode()
    assert "Give at least one command" in content or "Must be between" in content
    with django_capture_on_commit_callbacks(execute=True):
        response = as_alice.post(
            url, {"kind": "script", "task": "echo 1\necho 2", "memory_mb": "128"}
        )
    run = Run.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse(
        "runs:detail", args=[run.pk]
    )
    assert run.commands == ["echo 1", "echo 2"] and run.overrides == {"memory_mb": 128}
    assert no_celery.called


def test_rerun_with_edits_prefills_the_form(as_alice, finished_run):
    content = as_alice.get(
        reverse("runs:launch", args=[finished_run.project_id]) + f"?from={finished_run.pk}"
    ).content.decode()
    assert "make test</textarea>" in content and f"Re-run #{finished_run.pk} with edits" in content


def test_cancel_from_the_page_answers_with_the_new_header(as_alice, project, alice):
    run = services.start_run(project=project, user=alice, task="sleep 100", overrides={})
    response = as_alice.post(reverse("runs:cancel", args=[run.pk]), HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and 'id="run-header"' in response.content.decode()
    run.refresh_from_db()
    assert run.status == S.CANCELLED


def test_history_filters_sorts_and_pages_on_the_server(
    as_alice, alice, django_assert_max_num_queries
):
    projects = [make_project(alice, name=f"P{i}") for i in range(2)]
    runs = []
    for i in range(7):
        run = services.start_run(
            project=projects[i % 2], user=alice, task=f"echo {i}", overrides={}
        )
        Run.objects.filter(pk=run.pk).update(cost_usd=i / 10, duration_ms=1000 * (7 - i))
        runs.append(run)
    services.transition(runs[0], to=S.ERROR, reason="config_error")
    url = reverse("runs:history")
    with CaptureQueriesContext(connection) as one_row:
        as_alice.get(url, {"min_cost": "0.6"})
    with django_assert_max_num_queries(len(one_row)):  # no query per row (no N+1)
        content = as_alice.get(url, {"project": projects[0].pk}).content.decode()
    shown = [r.pk for r in runs if f'href="/runs/{r.pk}/"' in content]
    assert shown == [r.pk for r in runs if r.project_id == projects[0].pk]
    content = as_alice.get(url, {"status": "error"}).content.decode()
    assert f'href="/runs/{runs[0].pk}/"' in content and f'href="/runs/{runs[1].pk}/"' not in content
    content = as_alice.get(url, {"min_cost": "0.5"}).content.decode()
    assert [r.pk for r in runs if f'href="/runs/{r.pk}/"' in content] == [runs[5].pk, runs[6].pk]
    partial = as_alice.get(url, {"sort": "cost", "order": "asc"}, HTTP_HX_REQUEST="true")
    assert (
        partial.content.decode().startswith('\n<section id="history-table"')
        or 'id="history-table"' in partial.content.decode()
    )
    assert "<html" not in partial.content.decode()


def test_history_shows_strangers_nothing(as_bob, finished_run):
    content = as_bob.get(reverse("runs:history")).content.decode()
    assert f"/runs/{finished_run.pk}/" not in content and "No run matches" in content


def test_a_truncated_log_says_so_and_by_how_much(as_alice, finished_run):
    Run.objects.filter(pk=finished_run.pk).update(log_dropped_bytes=5 * 1024 * 1024)
    content = as_alice.get(reverse("runs:detail", args=[finished_run.pk])).content.decode()
    assert "Log truncated at 16 MB: 5.0\xa0MB of output were not stored." in content
    assert 'id="log-truncated-marker" class="log-marker" >' in content  # shown, not hidden


def test_a_queued_run_says_why_it_waits_and_where_it_is_in_line(as_alice, project, alice):
    services.start_run(project=project, user=alice, task="echo first", overrides={})
    second = services.start_run(project=project, user=alice, task="echo second", overrides={})
    content = as_alice.get(reverse("runs:header", args=[second.pk])).content.decode()
    assert "Waiting for a free worker" in content and "position 2 in the queue" in content
