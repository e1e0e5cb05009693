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
