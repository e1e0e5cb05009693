from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.reviews import services
from apps.reviews.models import ShareLink
from apps.runs import services as run_services
from apps.runs.models import Run, RunEvent
from apps.runs.recorder import NewEvent, append_events
from tests.projects.factories import PASSWORD


@pytest.fixture
def run(world, monkeypatch):
    monkeypatch.setattr(run_services, "enqueue_run", lambda run_id: None)
    run = run_services.start_run(
        project=world.project, user=world.member, task="echo", overrides={}
    )
    append_events(
        run.pk,
        [NewEvent(type="log", ts=1.0, data={"stream": "stdout"}, text="<b>one</b>\ntwo\nthree")],
    )
    RunEvent.objects.filter(run=run, type="log").update(line_start=1, line_count=3)
    Run.objects.filter(pk=run.pk).update(log_lines=3)
    run.refresh_from_db()
    return run


def login(client, user):
    assert client.login(username=user.username, password=PASSWORD)


def test_a_reviewer_comments_on_a_log_line_and_sets_a_verdict_through_htmx(world, run, client):
    login(client, world.admin)
    url = reverse("reviews:comment_add", args=[run.pk])
    response = client.post(
        url, {"body": "<script>alert(1)</script> why?", "line": "2"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; why?" in html and "<script>alert(1)" not in html
    assert 'href="#L2"' in html
    assert client.post(url, {"body": "x", "line": "99"}, HTTP_HX_REQUEST="true").status_code == 400
    response = client.post(
        reverse("reviews:verdict", args=[run.pk]),
        {"verdict": "needs_work", "note": "flaky"},
        HTTP_HX_REQUEST="true",
    )
    assert b"Needs work" in response.content
    run.review.refresh_from_db()
    assert (run.review.verdict, run.review.verdict_by, run.review.verdict_note) == (
        "needs_work",
        world.admin,
        "flaky",
    )


def test_viewers_read_but_cannot_review(world, run, client):
    login(client, world.viewer)
    panel = client.get(reverse("reviews:panel", args=[run.pk]))
    assert panel.status_code == 200 and b"comment-form" not in panel.content
    assert (
        client.post(reverse("reviews:verdict", args=[run.pk]), {"verdict": "approved"}).status_code
        == 403
    )
    assert (
        client.post(reverse("reviews:comment_add", args=[run.pk]), {"body": "hi"}).status_code
        == 403
    )


def test_labels_reviewer_queue_and_history_filters(world, run, client):
    services.add_label(run=run, user=world.member, name="Flaky")
    services.assign_reviewer(run=run, user=world.member, reviewer_name="tadmin")
    with pytest.raises(ValidationError, match="cannot see this run"):
        services.assign_reviewer(run=run, user=world.member, reviewer_name="stranger")
    with pytest.raises(ValidationError, match="viewer"):
        services.assign_reviewer(run=run, user=world.member, reviewer_name="viewer")
    login(client, world.admin)
    queue = client.get(reverse("reviews:queue"))
    assert f"#{run.pk}".encode() in queue.content
    history = reverse("runs:history")

    def ids(query):
        page = client.get(history + query)
        assert page.status_code == 200
        return {r.pk for r in page.context["page"].runs}

    other = run_services.start_run(project=world.project, user=world.member, task="b", overrides={})
    assert ids("?label=flaky") == {run.pk}
    assert ids("?reviewer=tadmin") == {run.pk}
    assert ids("?verdict=none") == {run.pk, other.pk}
    services.add_comment(run=other, user=world.member, body="hm")
    assert ids("?has_comments=1") == {other.pk}
    assert ids("?has_comments=0") == {run.pk}
    services.set_verdict(run=run, user=world.admin, verdict="approved")
    assert ids("?verdict=approved") == {run.pk}
    assert f"#{run.pk}".encode() not in client.get(reverse("reviews:queue")).content


def test_share_links_are_hashed_expire_and_can_be_revoked(world, run, client):
    with pytest.raises(PermissionDenied):
        services.create_share_link(run=run, user=world.member, days=7)
    link, token = services.create_share_link(run=run, user=world.admin, days=7)
    assert (
        token not in link.token_hash
        and ShareLink.objects.filter(token_hash__contains=token).count() == 0
    )
    url = reverse("reviews:shared", args=[token])
    page = client.get(url)  # anonymous
    assert page.status_code == 200 and b"Read-only view" in page.content
    assert b"&lt;b&gt;one&lt;/b&gt;" in page.content and page["Referrer-Policy"] == "no-referrer"
    assert b"Cancel" not in page.content
    assert client.get(reverse("reviews:shared", args=["nope" + token])).status_code == 404
    services.revoke_share_link(link=link, user=world.owner)
    assert client.get(url).status_code == 404
    link2, token2 = services.create_share_link(run=run, user=world.admin, days=1)
    ShareLink.objects.filter(pk=link2.pk).update(
        expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    assert client.get(reverse("reviews:shared", args=[token2])).status_code == 404
    actions = list(
        AuditEvent.objects.filter(action__startswith="share.").values_list("action", flat=True)
    )
    assert sorted(actions) == ["share.create", "share.create", "share.revoke"]


def test_compare_two_runs_side_by_side(world, run, client):
    other = run_services.start_run(project=world.project, user=world.member, task="b", overrides={})
    Run.objects.filter(pk=run.pk).update(total_tokens=100, duration_ms=2000)
    append_events(run.pk, [NewEvent(type="files", ts=2.0, data={"entries": [["a.txt", 3, False]]})])
    append_events(
        other.pk,
        [
            NewEvent(
                type="files", ts=2.0, data={"entries": [["a.txt", 5, False], ["b.txt", 1, False]]}
            )
        ],
    )
    login(client, world.viewer)
    page = client.get(reverse("reviews:compare") + f"?run={run.pk}&run={other.pk}")
    html = page.content.decode()
    assert (
        page.status_code == 200
        and "different size" in html
        and "only in B" in html
        and "2.0 s" in html
    )
    assert client.get(reverse("reviews:compare") + f"?run={run.pk}").status_code == 400
    client.logout()
    login(client, world.stranger)
    assert (
        client.get(reverse("reviews:compare") + f"?run={run.pk}&run={other.pk}").status_code == 404
    )


def test_comments_anchor_to_a_timeline_event(world, run, client):
    seq = run.events.filter(type="status").values_list("seq", flat=True).first()
    comment = services.add_comment(run=run, user=world.member, body="why queued?", seq=seq)
    assert (comment.anchor, comment.seq) == ("event", seq)
    with pytest.raises(ValidationError, match="No such event"):
        services.add_comment(run=run, user=world.member, body="x", seq=10_000)
    login(client, world.viewer)
    panel = client.get(reverse("reviews:panel", args=[run.pk]))
    assert f"event #{seq}".encode() in panel.content
    assert f'"{seq}": [{{"id": {comment.pk}'.encode() in panel.content  # the JSON for review.js


def test_the_top_bar_counts_open_invitations_and_reviews(world, run, client):
    services.assign_reviewer(run=run, user=world.member, reviewer_name="tadmin")
    login(client, world.admin)
    page = client.get(reverse("projects:list")).content.decode()
    assert 'data-testid="nav-reviews">1<' in page and "nav-invitations" not in page


def test_history_shows_why_a_run_waits(world, run, client):
    Run.objects.filter(pk=run.pk).update(status_message="team limit 2/2 running")
    login(client, world.viewer)
    page = client.get(reverse("runs:history")).content.decode()
    assert "team limit 2/2 running" in page
