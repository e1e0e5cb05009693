"""/api/v1/runs: launch, history with cursors, read, cancel, re-run, events, log, artifacts."""

from __future__ import annotations

import hashlib
import time
from decimal import Decimal

import pytest
from django.db import transaction

from apps.limits.models import LimitPolicy
from apps.runs import services
from apps.runs.models import Artifact, Run
from apps.runs.recorder import NewEvent, append_events
from apps.runs.selectors import events_after
from tests.api.conftest import ApiClient, assert_error, make_token
from tests.projects.factories import make_project, make_user

pytestmark = pytest.mark.django_db
S = Run.Status


def start(project, user, task="echo hi", **overrides) -> Run:
    return services.start_run(project=project, user=user, task=task, overrides=overrides)


def finish(run: Run, status: str = S.SUCCEEDED, **fields) -> Run:
    Run.objects.filter(pk=run.pk).update(status=status, end_reason=status, **fields)
    run.refresh_from_db()
    return run


def add_log(run: Run, lines: list[str], first: int = 1) -> None:
    with transaction.atomic():
        append_events(
            run.pk,
            [
                NewEvent(
                    "log",
                    time.time(),
                    {"stream": "stdout"},
                    text="\n".join(lines),
                    line_start=first,
                    line_count=len(lines),
                )
            ],
            updates={"log_lines": first + len(lines) - 1},
        )


# -- launching -----------------------------------------------------------------------------------


def test_launch_a_script_run_with_commands_and_overrides(as_alice, alice, project):
    response = as_alice.post(
        "/api/v1/runs",
        {
            "project": project.pk,
            "commands": ["echo one", "echo two"],
            "overrides": {"memory_mb": 512, "timeout_seconds": 60, "network_mode": "isolated"},
        },
    )
    assert response.status_code == 201, response.content
    body = response.json()
    run = Run.objects.get(pk=body["id"])
    assert run.user == alice and run.kind == "script" and run.commands == ["echo one", "echo two"]
    assert run.config["memory_mb"] == 512 and run.config["network_mode"] == "isolated"
    assert body["status"] == "queued" and body["queue_position"] >= 1 and not body["finished"]
    assert body["links"]["events"] == f"/api/v1/runs/{run.pk}/events"
    assert body["links"]["web"] == f"/runs/{run.pk}/"


def test_launch_an_agent_run_with_its_task(as_alice, alice):
    project = make_project(alice, default_kind="agent")
    body = as_alice.post(
        "/api/v1/runs",
        {"project": project.pk, "task": "Fix the tests", "overrides": {"max_cost_usd": "0.50"}},
    ).json()
    assert body["kind"] == "agent" and body["task"] == "Fix the tests"
    assert body["config"]["max_cost_usd"] == 0.5


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"kind": "agent", "task": ""}, "task"),
        ({"overrides": {"memory_mb": 10**6}}, "overrides.memory_mb"),
        ({"overrides": {"cpu_cores": 0.01}}, "overrides.cpu_cores"),
        ({"overrides": {"bogus": 1}}, "overrides.bogus"),
        ({"overrides": {"image": "UPPER CASE"}}, None),
        ({"overrides": {"network_mode": "open"}}, "overrides.network_mode"),
        ({"kind": "other"}, "kind"),
        ({"project": "seven"}, "project"),
        ({"project": 0}, "project"),
    ],
)
def test_invalid_launches_are_400_naming_the_field(as_alice, project, payload, field):
    body = {"project": project.pk, "task": "echo", **payload}
    error = assert_error(as_alice.post("/api/v1/runs", body), 400, "validation_error")
    if field is not None:
        assert error["field"] == field, error
    assert not Run.objects.exists()


def test_launching_on_an_invisible_project_is_404(as_bob, project):
    assert_error(as_bob.post("/api/v1/runs", {"project": project.pk, "task": "x"}), 404)
    assert_error(as_bob.post("/api/v1/runs", {"project": 10**12, "task": "x"}), 404)


def test_malformed_json_is_a_400(as_alice):
    response = as_alice.client.post(
        "/api/v1/runs", "{not json", content_type="application/json", headers=as_alice.headers()
    )
    assert_error(response, 400)


# -- reading -------------------------------------------------------------------------------------


def test_read_a_run_with_status_end_reason_usage_and_stats(as_alice, alice, project):
    run = finish(
        start(project, alice),
        S.FAILED,
        error_message="command 1 exited 2",
        exit_code=2,
        total_tokens=1234,
        input_tokens=1000,
        output_tokens=234,
        cost_usd="0.012345",
        duration_ms=5300,
        peak_memory_mb=41.5,
        log_lines=12,
    )
    body = as_alice.get(f"/api/v1/runs/{run.pk}").json()
    assert (body["status"], body["end_reason"], body["finished"]) == ("failed", "failed", True)
    assert body["error_message"] == "command 1 exited 2" and body["queue_position"] is None
    assert body["usage"]["total_tokens"] == 1234 and body["usage"]["cost_usd"] == "0.012345"
    assert body["stats"] == {
        "duration_ms": 5300,
        "peak_memory_mb": 41.5,
        "log_lines": 12,
        "log_bytes": 0,
        "log_dropped_bytes": 0,
        "exit_code": 2,
    }
    assert body["launched_by"] == "alice" and body["project_name"] == "Demo"


@pytest.mark.parametrize(
    "suffix", ["", "/events", "/log", "/artifacts", "/artifacts/1/download", "/cancel", "/rerun"]
)
def test_strangers_get_the_same_404_as_for_nothing(as_alice, as_bob, alice, project, suffix):
    run = start(project, alice)
    method = "POST" if suffix in {"/cancel", "/rerun"} else "GET"
    theirs = as_bob.request(method, f"/api/v1/runs/{run.pk}{suffix}")
    nothing = as_alice.request(method, f"/api/v1/runs/999999{suffix}")
    assert_error(theirs, 404, "not_found")
    assert theirs.json() == nothing.json()
    assert Run.objects.count() == 1 and Run.objects.get().status == S.QUEUED


def test_anonymous_gets_401(alice, project):
    run = start(project, alice)
    for path in (f"/api/v1/runs/{run.pk}", "/api/v1/runs", f"/api/v1/runs/{run.pk}/events"):
        assert_error(ApiClient().get(path), 401, "not_authenticated")


# -- history -------------------------------------------------------------------------------------


def test_history_filters_like_the_page(as_alice, alice, project):
    other = make_project(alice, name="Other")
    teammate = make_user("carol")
    a = finish(start(project, alice), S.SUCCEEDED, cost_usd="0.50", duration_ms=1000)
    b = finish(start(project, alice), S.FAILED, cost_usd="2.00", duration_ms=9000)
    c = start(other, alice)
    make_project(teammate)  # someone else's, never listed

    def ids(**params):
        response = as_alice.get("/api/v1/runs", **params)
        assert response.status_code == 200, response.content
        return [item["id"] for item in response.json()["items"]]

    assert ids() == [c.pk, b.pk, a.pk]
    assert ids(project=project.pk) == [b.pk, a.pk]
    assert ids(status=["failed", "queued"]) == [c.pk, b.pk]
    assert ids(min_cost="1") == [b.pk]
    assert ids(max_duration=5) == [c.pk, a.pk]
    assert ids(sort="cost", order="asc") == [c.pk, a.pk, b.pk]
    assert ids(user="alice") == [c.pk, b.pk, a.pk] and ids(user="carol") == []
    assert_error(as_alice.get("/api/v1/runs", status="sleeping"), 400, field="status.0")
    assert_error(as_alice.get("/api/v1/runs", sort="random"), 400, field="sort")


def test_history_review_filters_like_the_page(as_alice, alice, project):
    from apps.reviews import services as review_services

    a, b, c = (start(project, alice) for _ in range(3))
    review_services.set_verdict(run=a, user=alice, verdict="approved")
    review_services.set_verdict(run=b, user=alice, verdict="rejected")
    review_services.add_label(run=b, user=alice, name="Flaky")
    review_services.assign_reviewer(run=c, user=alice, reviewer_name="alice")
    review_services.add_comment(run=c, user=alice, body="look")

    def ids(**params):
        response = as_alice.get("/api/v1/runs", **params)
        assert response.status_code == 200, response.content
        return [item["id"] for item in response.json()["items"]]

    assert ids(verdict="approved") == [a.pk]
    assert ids(verdict="none") == [c.pk]
    assert ids(label="flaky") == [b.pk] and ids(label="nope") == []
    assert ids(reviewer="ALICE") == [c.pk]
    assert ids(has_comments="true") == [c.pk]
    assert ids(has_comments="false") == [b.pk, a.pk]
    assert ids(verdict="rejected", label="flaky", project=project.pk) == [b.pk]
    assert_error(as_alice.get("/api/v1/runs", verdict="great"), 400, field="verdict")
    assert_error(as_alice.get("/api/v1/runs", has_comments="maybe"), 400, field="has_comments")


def test_history_pages_by_cursor_both_ways(as_alice, alice, project):
    runs = [start(project, alice) for _ in range(5)]
    newest_first = [run.pk for run in reversed(runs)]
    seen, cursor, pages = [], None, []
    while True:
        page = as_alice.get("/api/v1/runs", limit=2, cursor=cursor).json()
        pages.append(page)
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == newest_first and len(pages) == 3
    back = as_alice.get("/api/v1/runs", limit=2, before=pages[2]["prev_cursor"]).json()
    assert [item["id"] for item in back["items"]] == newest_first[2:4]


def test_a_history_page_costs_the_same_queries_for_5_runs_as_for_50(
    as_alice, alice, project, django_assert_max_num_queries
):
    runs = [finish(start(project, alice)) for _ in range(5)]
    with django_assert_max_num_queries(8) as few:
        assert len(as_alice.get("/api/v1/runs", status="succeeded").json()["items"]) == 5
    runs += [finish(start(project, alice)) for _ in range(45)]
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert len(as_alice.get("/api/v1/runs", status="succeeded").json()["items"]) == 50


@pytest.mark.parametrize("cursor", ["garbage", "W1swXQ", "WzEsIDJd", "WyJ4IiwgMV0"])
def test_a_forged_cursor_is_a_400(as_alice, cursor):
    assert_error(as_alice.get("/api/v1/runs", cursor=cursor), 400, field="cursor")


# -- cancel and re-run ---------------------------------------------------------------------------


def test_cancel_a_queued_run_then_again_harmlessly(as_alice, alice, project):
    run = start(project, alice)
    body = as_alice.post(f"/api/v1/runs/{run.pk}/cancel").json()
    assert body["status"] == "cancelled" and body["end_reason"] == "cancelled"
    assert as_alice.post(f"/api/v1/runs/{run.pk}/cancel").status_code == 200


def test_cancelling_a_finished_run_is_a_409(as_alice, alice, project):
    run = finish(start(project, alice), S.SUCCEEDED)
    error = assert_error(as_alice.post(f"/api/v1/runs/{run.pk}/cancel"), 409, "conflict")
    assert "already finished" in error["message"]
    assert Run.objects.get(pk=run.pk).status == S.SUCCEEDED


def test_rerun_launches_the_same_run_again(as_alice, alice, project):
    run = finish(start(project, alice, "echo again", memory_mb=300), S.FAILED)
    response = as_alice.post(f"/api/v1/runs/{run.pk}/rerun")
    assert response.status_code == 201
    body = response.json()
    assert body["rerun_of"] == run.pk and body["task"] == "echo again"
    assert body["overrides"] == {"memory_mb": 300} and body["status"] == "queued"


def test_read_scope_cannot_cancel(alice, project):
    run = start(project, alice)
    reader = ApiClient(make_token(alice, ["runs:read"]))
    assert_error(reader.post(f"/api/v1/runs/{run.pk}/cancel"), 403, "missing_scope")
    assert Run.objects.get(pk=run.pk).status == S.QUEUED


# -- events, log, artifacts ----------------------------------------------------------------------


def test_event_pages_are_the_durable_log_after_a_seq(as_alice, alice, project):
    run = start(project, alice)
    with transaction.atomic():
        append_events(run.pk, [NewEvent("note", time.time(), {"i": i}) for i in range(25)])
    add_log(run, ["\x1b[31mred\x1b[0m", "plain"])
    services.transition(run, to=S.CANCELLED, reason="cancelled")
    run.refresh_from_db()
    collected, after, pages = [], 0, 0
    while True:
        page = as_alice.get(f"/api/v1/runs/{run.pk}/events", after=after, limit=10).json()
        pages += 1
        collected += page["events"]
        after = page["next_after"]
        if page["finished"]:
            break
        assert len(page["events"]) == 10 and pages < 10
    assert collected == events_after(run_id=run.pk, after=0, limit=10_000)
    assert [e["seq"] for e in collected] == list(range(1, run.last_seq + 1))
    assert page["status"] == "cancelled" and page["last_seq"] == run.last_seq
    resumed = as_alice.get(f"/api/v1/runs/{run.pk}/events", after=20).json()
    assert resumed["events"] == collected[20:]
    log = next(e for e in collected if e["type"] == "log")
    assert log["data"] == {"stream": "stdout", "line": 1, "text": "\x1b[31mred\x1b[0m\nplain"}


def test_an_active_run_is_never_finished_even_when_caught_up(as_alice, alice, project):
    run = start(project, alice)
    page = as_alice.get(f"/api/v1/runs/{run.pk}/events").json()
    assert [e["type"] for e in page["events"]] == ["status"] and not page["finished"]
    again = as_alice.get(f"/api/v1/runs/{run.pk}/events", after=page["next_after"]).json()
    assert again["events"] == [] and again["next_after"] == page["next_after"]
    huge = as_alice.get(f"/api/v1/runs/{run.pk}/events", after=10**30, limit=-5)
    assert huge.status_code == 200 and huge.json()["events"] == []


def test_the_log_as_text_raw_or_plain(as_alice, alice, project):
    run = start(project, alice)
    add_log(run, ["\x1b[31mred\x1b[0m", "<b>not html</b>"])
    raw = as_alice.get(f"/api/v1/runs/{run.pk}/log")
    assert raw.status_code == 200 and raw["Content-Type"] == "text/plain; charset=utf-8"
    assert raw["X-Content-Type-Options"] == "nosniff"
    assert raw.getvalue() == b"\x1b[31mred\x1b[0m\n<b>not html</b>\n"
    plain = as_alice.get(f"/api/v1/runs/{run.pk}/log", plain="true")
    assert plain.getvalue() == b"red\n<b>not html</b>\n"


def test_artifacts_list_and_download_as_inert_attachments(as_alice, alice, project):
    run = finish(start(project, alice))
    content = b"<script>alert(1)</script>"
    page = Artifact.objects.create(
        run=run,
        path="out/page.html",
        size=len(content),
        content=content,
        sha256=hashlib.sha256(content).hexdigest(),
    )
    Artifact.objects.create(run=run, path="out/a.txt", size=2, content=b"hi", sha256="0" * 64)
    items = as_alice.get(f"/api/v1/runs/{run.pk}/artifacts").json()["items"]
    assert [(i["path"], i["size"]) for i in items] == [("out/a.txt", 2), ("out/page.html", 25)]
    url = next(i["download_url"] for i in items if i["id"] == page.pk)
    response = as_alice.get(url)
    assert response.status_code == 200 and response.getvalue() == content
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"] == 'attachment; filename="page.html"'
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "sandbox"
    other = finish(start(project, alice))
    assert_error(as_alice.get(f"/api/v1/runs/{other.pk}/artifacts/{page.pk}/download"), 404)


def test_usage_counts_the_callers_runs(as_alice, alice, project):
    finish(start(project, alice), S.SUCCEEDED, total_tokens=100, cost_usd="0.25")
    start(project, alice)
    usage = as_alice.get("/api/v1/me").json()["usage"]
    assert usage["runs_total"] == 2 and usage["unfinished_runs"] == 1
    assert usage["running_runs"] == 0  # queued runs hold no slot
    assert usage["tokens_last_30_days"] == 100
    assert Decimal(usage["cost_usd_last_30_days"]) == Decimal("0.25")


def test_limits_are_the_callers_effective_limits_and_a_spent_budget_is_a_429(
    as_alice, alice, project
):
    LimitPolicy.objects.create(
        scope="user",
        user=alice,
        max_memory_mb=512,
        max_concurrent_runs=2,
        monthly_token_budget=1000,
    )
    limits = as_alice.get("/api/v1/me").json()["limits"]
    assert limits["per_run"]["memory_mb"] == {"value": 512, "source": "your user limit"}
    assert limits["concurrent_runs"] == {"value": 2, "source": "your user limit"}
    assert limits["monthly_tokens"] == {"value": 1000, "source": "your user limit", "used": 0}
    too_big = as_alice.post(
        "/api/v1/runs", {"project": project.pk, "task": "x", "overrides": {"memory_mb": 1024}}
    )
    error = assert_error(too_big, 400, "validation_error", field="overrides.memory_mb")
    assert "your user limit" in error["message"]
    finish(start(project, alice), S.SUCCEEDED, total_tokens=1000)
    spent = as_alice.post("/api/v1/runs", {"project": project.pk, "task": "x"})
    error = assert_error(spent, 429, "budget_exhausted")
    assert error["limit"] == "monthly_budget" and "token budget is used up" in error["message"]
    assert int(spent["Retry-After"]) > 0


# -- comparison ----------------------------------------------------------------------------------


def test_compare_two_runs_as_the_compare_page_does(as_alice, as_bob, alice, project):
    from apps.reviews.selectors import compare_runs

    a = finish(start(project, alice), S.SUCCEEDED, total_tokens=1200, duration_ms=1500)
    b = finish(start(project, alice), S.FAILED, total_tokens=1200, exit_code=2)
    for run, entries in (
        (a, [["out.txt", 5, False], ["dir", 0, True]]),
        (b, [["out.txt", 9, False]]),
    ):
        with transaction.atomic():
            append_events(run.pk, [NewEvent("files", time.time(), {"entries": entries})])
    response = as_alice.get(f"/api/v1/runs/{a.pk}/compare/{b.pk}")
    assert response.status_code == 200, response.content
    body = response.json()
    page = compare_runs(a=a, b=b)
    assert (body["a"], body["b"]) == (a.pk, b.pk)
    assert body["rows"] == [
        {"label": r.label, "a": r.a, "b": r.b, "differs": r.differs} for r in page["rows"]
    ]
    rows = {row["label"]: row for row in body["rows"]}
    assert rows["Status"]["differs"] and not rows["Tokens"]["differs"]
    assert rows["Exit code"]["b"] == "2"
    assert body["files"] == [{"path": "out.txt", "a": 5, "b": 9, "state": "different size"}]
    dave = make_user("dave")
    hidden = finish(start(make_project(dave), dave))
    assert_error(as_alice.get(f"/api/v1/runs/{a.pk}/compare/{hidden.pk}"), 404, "not_found")
    assert_error(as_bob.get(f"/api/v1/runs/{a.pk}/compare/{b.pk}"), 404, "not_found")
    assert_error(
        ApiClient(make_token(alice, ["reviews:read"])).get(f"/api/v1/runs/{a.pk}/compare/{b.pk}"),
        403,
        "missing_scope",
    )


def test_me_lists_the_effective_limits_of_each_team(as_alice, alice, bob):
    from apps.teams import services as team_services
    from apps.teams.models import Membership

    assert as_alice.get("/api/v1/me").json()["limits"]["teams"] == []
    alpha = team_services.create_team(user=alice, name="Alpha")
    beta = team_services.create_team(user=bob, name="Beta")
    Membership.objects.create(team=beta, user=alice, role="viewer")
    team_services.create_team(user=bob, name="Gamma")  # not alice's: never listed
    LimitPolicy.objects.create(
        scope="team",
        team=alpha,
        max_memory_mb=768,
        max_concurrent_runs=3,
        monthly_cost_budget_usd=5,
    )
    LimitPolicy.objects.create(scope="user", user=alice, max_memory_mb=512)
    shared = make_project(alice, name="Shared", team=alpha)
    finish(start(shared, alice), S.SUCCEEDED, total_tokens=10, cost_usd="1.25")
    teams = as_alice.get("/api/v1/me").json()["limits"]["teams"]
    assert [(t["name"], t["role"]) for t in teams] == [("Alpha", "owner"), ("Beta", "viewer")]
    a, b = teams
    # A run alice launches in Alpha: her user row wins for value limits, as the launch checks.
    assert a["per_run"]["memory_mb"] == {"value": 512, "source": "your user limit"}
    assert a["concurrent_runs"] == {"value": 3, "source": "team Alpha limit", "running": 0}
    assert a["monthly_cost_usd"] == {"value": "5.00", "source": "team Alpha limit", "used": "1.25"}
    assert a["monthly_tokens"]["used"] == 10
    assert b["monthly_cost_usd"]["used"] == "0"
    assert b["team"] == beta.pk and "allowed" in b
