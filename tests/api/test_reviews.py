"""/api/v1/runs/{id}/review, comments and verdict, through apps/reviews' services."""

from __future__ import annotations

import pytest

from apps.runs import services as run_services
from apps.teams import services as team_services
from apps.teams.models import Membership
from tests.api.conftest import ApiClient, assert_error, make_token
from tests.projects.factories import make_project, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(alice, project):
    return run_services.start_run(project=project, user=alice, task="echo", overrides={})


def test_a_ci_job_reads_the_verdict_a_reviewer_gave(as_alice, alice, run):
    assert as_alice.get(f"/api/v1/runs/{run.pk}/review").json() == {
        "run": run.pk,
        "verdict": "",
        "verdict_by": None,
        "verdict_at": None,
        "verdict_note": "",
        "reviewer": None,
        "labels": [],
        "comments": [],
    }
    given = as_alice.put(
        f"/api/v1/runs/{run.pk}/verdict", {"verdict": "needs_work", "note": "flaky test"}
    )
    assert given.status_code == 200
    review = ApiClient(make_token(alice, ["reviews:read"])).get(f"/api/v1/runs/{run.pk}/review")
    body = review.json()
    assert (body["verdict"], body["verdict_by"], body["verdict_note"]) == (
        "needs_work",
        "alice",
        "flaky test",
    )
    cleared = as_alice.put(f"/api/v1/runs/{run.pk}/verdict", {"verdict": ""}).json()
    assert cleared["verdict"] == "" and cleared["verdict_by"] is None


def test_comments_on_the_run_and_on_an_event(as_alice, run):
    first = as_alice.post(f"/api/v1/runs/{run.pk}/comments", {"body": "<b>hi</b>"})
    assert first.status_code == 201
    assert first.json()["anchor"] == "run" and first.json()["body"] == "<b>hi</b>"
    on_event = as_alice.post(f"/api/v1/runs/{run.pk}/comments", {"body": "here", "seq": 1})
    assert on_event.json()["anchor"] == "event" and on_event.json()["seq"] == 1
    bad = as_alice.post(f"/api/v1/runs/{run.pk}/comments", {"body": "x", "seq": 999})
    assert_error(bad, 400, "validation_error", field="seq")
    assert_error(as_alice.post(f"/api/v1/runs/{run.pk}/comments", {"body": ""}), 400, field="body")
    comments = as_alice.get(f"/api/v1/runs/{run.pk}/review").json()["comments"]
    assert [c["body"] for c in comments] == ["<b>hi</b>", "here"]
    deleted = as_alice.delete(f"/api/v1/runs/{run.pk}/comments/{first.json()['id']}")
    assert deleted.status_code == 204
    assert len(as_alice.get(f"/api/v1/runs/{run.pk}/review").json()["comments"]) == 1
    assert_error(as_alice.delete(f"/api/v1/runs/{run.pk}/comments/{first.json()['id']}"), 404)


def test_an_invalid_verdict_names_the_field(as_alice, run):
    assert_error(
        as_alice.put(f"/api/v1/runs/{run.pk}/verdict", {"verdict": "great"}), 400, field="verdict"
    )


def test_members_delete_only_their_own_comments_admins_any(alice, run, project):
    team = team_services.create_team(user=alice, name="Alpha")
    project.team = team
    project.save()
    member, admin = make_user("member"), make_user("tadmin")
    Membership.objects.create(team=team, user=member, role="member")
    Membership.objects.create(team=team, user=admin, role="admin")
    comment = ApiClient(make_token(alice)).post(f"/api/v1/runs/{run.pk}/comments", {"body": "a"})
    path = f"/api/v1/runs/{run.pk}/comments/{comment.json()['id']}"
    assert_error(ApiClient(make_token(member)).delete(path), 403, "forbidden")
    assert ApiClient(make_token(admin)).delete(path).status_code == 204


def test_strangers_see_nothing(as_bob, run):
    assert_error(as_bob.get(f"/api/v1/runs/{run.pk}/review"), 404)
    assert_error(as_bob.post(f"/api/v1/runs/{run.pk}/comments", {"body": "x"}), 404)
    assert_error(as_bob.put(f"/api/v1/runs/{run.pk}/verdict", {"verdict": "approved"}), 404)


def test_a_second_project_owner_cannot_reach_the_first(bob, run):
    make_project(bob, name="Bob's")
    api = ApiClient(make_token(bob))
    assert_error(api.get(f"/api/v1/runs/{run.pk}/review"), 404)


# -- labels, reviewer, the review queue, share links ----------------------------------------------


@pytest.fixture
def team_run(alice, project, run):
    team = team_services.create_team(user=alice, name="Beta")
    project.team = team
    project.save()
    users = {}
    for role in ("admin", "member", "viewer"):
        users[role] = make_user(f"t{role}")
        Membership.objects.create(team=team, user=users[role], role=role)
    run.project.refresh_from_db()
    return run, users


def test_labels_are_added_and_removed(as_alice, run):
    path = f"/api/v1/runs/{run.pk}/labels"
    assert as_alice.post(path, {"label": "Flaky Test"}).json()["labels"] == ["flaky test"]
    assert as_alice.post(path, {"label": "flaky test"}).status_code == 200  # harmless again
    assert as_alice.post(path, {"label": "ci/nightly"}).json()["labels"] == [
        "ci/nightly",
        "flaky test",
    ]
    assert_error(as_alice.post(path, {"label": "no <b>"}), 400, "validation_error", field="label")
    assert_error(as_alice.post(path, {}), 400, field="label")
    removed = as_alice.delete(f"{path}?label=ci%2Fnightly")
    assert removed.status_code == 200 and removed.json()["labels"] == ["flaky test"]
    assert as_alice.delete(f"{path}?label=never").status_code == 200
    assert_error(as_alice.delete(path), 400, field="label")


def test_assign_and_unassign_a_reviewer_who_sees_the_queue(alice, team_run):
    run, users = team_run
    as_member = ApiClient(make_token(users["member"]))
    path = f"/api/v1/runs/{run.pk}/reviewer"
    assert as_member.get("/api/v1/reviews/waiting").json() == {"items": []}
    assigned = ApiClient(make_token(alice)).put(path, {"reviewer": "tmember"})
    assert assigned.status_code == 200 and assigned.json()["reviewer"] == "tmember"
    items = as_member.get("/api/v1/reviews/waiting").json()["items"]
    assert [(i["run"], i["assigned_by"], i["status"]) for i in items] == [
        (run.pk, "alice", "queued")
    ]
    # A verdict takes it off the queue, as on the page.
    as_member.put(f"/api/v1/runs/{run.pk}/verdict", {"verdict": "approved"})
    assert as_member.get("/api/v1/reviews/waiting").json()["items"] == []
    assert_error(as_member.put(path, {"reviewer": "tviewer"}), 400, field="reviewer")
    assert_error(as_member.put(path, {"reviewer": "bob"}), 400, field="reviewer")
    assert as_member.put(path, {"reviewer": None}).json()["reviewer"] is None
    as_member.put(path, {"reviewer": "tadmin"})
    assert as_member.delete(path).json()["reviewer"] is None
    as_viewer = ApiClient(make_token(users["viewer"]))
    assert_error(as_viewer.put(path, {"reviewer": "tmember"}), 403, "forbidden")
    assert_error(as_viewer.post(f"/api/v1/runs/{run.pk}/labels", {"label": "x"}), 403)


def test_the_queue_needs_reviews_read(alice):
    assert_error(
        ApiClient(make_token(alice, ["runs:read"])).get("/api/v1/reviews/waiting"),
        403,
        "missing_scope",
    )
    assert_error(ApiClient().get("/api/v1/reviews/waiting"), 401)


def test_share_links_made_shown_once_listed_and_revoked(alice, team_run, client):
    from apps.audit.models import AuditEvent

    run, users = team_run
    as_admin = ApiClient(make_token(users["admin"]))
    path = f"/api/v1/runs/{run.pk}/share-links"
    made = as_admin.post(path, {"days": 3})
    assert made.status_code == 201, made.content
    link = made.json()
    assert link["token"] and link["url"].endswith(f"/review/shared/{link['token']}/")
    assert link["active"] and link["hint"] == link["token"][:6]
    assert client.get(f"/review/shared/{link['token']}/").status_code == 200
    listed = as_admin.get(path).json()["items"]
    assert [item["id"] for item in listed] == [link["id"]] and "token" not in listed[0]
    revoked = as_admin.post(f"{path}/{link['id']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["active"] is False
    assert as_admin.post(f"{path}/{link['id']}/revoke").status_code == 200  # harmless again
    assert client.get(f"/review/shared/{link['token']}/").status_code == 404
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"share.create", "share.revoke"} <= actions
    assert_error(as_admin.post(path, {"days": 91}), 400, field="days")
    assert_error(as_admin.post(f"{path}/999999/revoke"), 404)
    as_member = ApiClient(make_token(users["member"]))
    assert_error(as_member.post(path, {"days": 3}), 403, "forbidden")
    assert_error(as_member.get(path), 403, "forbidden")
    assert_error(as_member.post(f"{path}/{link['id']}/revoke"), 403, "forbidden")
    assert_error(ApiClient(make_token(make_user("stranger"))).get(path), 404)
    reader = ApiClient(make_token(users["admin"], ["reviews:read"]))
    assert reader.get(path).status_code == 200
    assert_error(reader.post(path, {"days": 3}), 403, "missing_scope")
