"""/api/v1/teams and /api/v1/invitations: the team pages' actions with the same rules, audit
entries and error shapes (400 naming the field, 403 role, 404 invisible, 409 state)."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.teams.models import Invitation, Membership
from tests.api.conftest import ApiClient, assert_error, make_token
from tests.projects.factories import make_user
from tests.teams.conftest import World

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(db) -> World:
    return World()


def api(user, scopes=("teams:write",)) -> ApiClient:
    return ApiClient(make_token(user, scopes))


def test_my_teams_with_role_and_size_and_a_new_team(world):
    body = api(world.viewer, ["teams:read"]).get("/api/v1/teams").json()
    assert body["items"] == [
        {
            "id": world.team.pk,
            "name": "Alpha",
            "role": "viewer",
            "members": 4,
            "created_at": body["items"][0]["created_at"],
        }
    ]
    created = api(world.viewer).post("/api/v1/teams", {"name": "Gamma"})
    assert created.status_code == 201 and created.json()["role"] == "owner"
    assert AuditEvent.objects.filter(action="team.create", actor_name="viewer").exists()
    # Names are unique regardless of case: the same 400 as the page's message, naming `name`.
    assert_error(api(world.owner).post("/api/v1/teams", {"name": "gamma"}), 400, field="name")


def test_members_with_roles_for_any_member_404_for_strangers(world):
    body = api(world.viewer, ["teams:read"]).get(f"/api/v1/teams/{world.team.pk}/members").json()
    assert [(m["user"], m["role"], m["you"]) for m in body["items"]] == [
        ("member", "member", False),
        ("owner", "owner", False),
        ("tadmin", "admin", False),
        ("viewer", "viewer", True),
    ]
    stranger = api(world.stranger, ["teams:read"])
    assert_error(stranger.get(f"/api/v1/teams/{world.team.pk}/members"), 404, "not_found")
    assert_error(stranger.get(f"/api/v1/teams/{world.team.pk}"), 404, "not_found")
    # Identical to a team that does not exist.
    assert_error(stranger.get("/api/v1/teams/999999/members"), 404, "not_found")


def test_invite_by_email_accept_and_the_audit_trail(world):
    newbie = make_user("newbie", email="new@example.test")
    response = api(world.admin).post(
        f"/api/v1/teams/{world.team.pk}/invitations", {"who": "NEW@example.test", "role": "viewer"}
    )
    assert response.status_code == 201, response.content
    invitation = response.json()
    assert (invitation["user"], invitation["role"], invitation["status"]) == (
        "newbie",
        "viewer",
        "pending",
    )
    listed = api(world.admin, ["teams:read"]).get(f"/api/v1/teams/{world.team.pk}/invitations")
    assert [i["id"] for i in listed.json()["items"]] == [invitation["id"]]
    mine = api(newbie, ["teams:read"]).get("/api/v1/invitations").json()["items"]
    assert [(i["team_name"], i["invited_by"]) for i in mine] == [("Alpha", "tadmin")]

    joined = api(newbie).post(f"/api/v1/invitations/{invitation['id']}/accept")
    assert joined.status_code == 200 and joined.json()["role"] == "viewer"
    assert Membership.objects.get(team=world.team, user=newbie).role == "viewer"
    actions = list(
        AuditEvent.objects.filter(team_id=world.team.pk).values_list("action", flat=True)
    )
    assert {"team.invite", "team.invite_accept"} <= set(actions)
    # Answering again: the invitation is no longer open.
    assert_error(
        api(newbie).post(f"/api/v1/invitations/{invitation['id']}/accept"), 409, "conflict"
    )


def test_invitation_errors_name_the_field_and_follow_the_roles(world):
    path = f"/api/v1/teams/{world.team.pk}/invitations"
    admin = api(world.admin)
    assert_error(admin.post(path, {"who": "member"}), 400, field="who")  # already in the team
    assert_error(admin.post(path, {"who": "nobody-here"}), 400, field="who")
    assert_error(admin.post(path, {"who": "stranger", "role": "boss"}), 400, field="role")
    assert_error(admin.post(path, {}), 400, field="who")
    # Only an owner makes owners; members do not invite at all; the list is for admins.
    assert_error(admin.post(path, {"who": "stranger", "role": "owner"}), 403, "forbidden")
    assert_error(api(world.member).post(path, {"who": "stranger"}), 403, "forbidden")
    assert_error(api(world.member, ["teams:read"]).get(path), 403, "forbidden")
    assert_error(api(world.stranger).post(path, {"who": "stranger"}), 404)
    assert not Invitation.objects.filter(user=world.stranger).exists()


def test_cancel_then_accept_is_409_and_someone_elses_invitation_is_404(world):
    invited = api(world.owner).post(
        f"/api/v1/teams/{world.team.pk}/invitations", {"who": "stranger"}
    )
    invitation_id = invited.json()["id"]
    # Not addressed to the viewer: it does not exist for them.
    assert_error(api(world.viewer).post(f"/api/v1/invitations/{invitation_id}/accept"), 404)
    revoke = f"/api/v1/teams/{world.team.pk}/invitations/{invitation_id}/revoke"
    cancelled = api(world.admin).post(revoke)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "revoked"
    before = AuditEvent.objects.filter(action="team.invite_revoke").count()
    assert before == 1
    # Twice: a 409, and no second audit entry for a change that did not happen.
    assert_error(api(world.admin).post(revoke), 409, "conflict")
    assert AuditEvent.objects.filter(action="team.invite_revoke").count() == before
    stranger = api(world.stranger)
    assert_error(stranger.post(f"/api/v1/invitations/{invitation_id}/accept"), 409, "conflict")
    assert_error(stranger.post(f"/api/v1/invitations/{invitation_id}/decline"), 409, "conflict")
    assert not Membership.objects.filter(team=world.team, user=world.stranger).exists()


def test_decline(world):
    invitation = api(world.owner).post(
        f"/api/v1/teams/{world.team.pk}/invitations", {"who": "stranger"}
    )
    declined = api(world.stranger).post(f"/api/v1/invitations/{invitation.json()['id']}/decline")
    assert declined.status_code == 200 and declined.json()["status"] == "declined"
    assert AuditEvent.objects.filter(action="team.invite_decline").count() == 1


def test_role_changes_follow_the_pages_rules(world):
    def path(user):
        return f"/api/v1/teams/{world.team.pk}/members/{world.membership(user).pk}"

    changed = api(world.admin).patch(path(world.member), {"role": "viewer"})
    assert changed.status_code == 200 and changed.json()["role"] == "viewer"
    event = AuditEvent.objects.get(action="team.role_change")
    assert (event.actor_name, event.before, event.after) == (
        "tadmin",
        {"role": "member"},
        {"role": "viewer"},
    )
    assert_error(api(world.admin).patch(path(world.viewer), {"role": "owner"}), 403)
    assert_error(api(world.admin).patch(path(world.owner), {"role": "member"}), 403)
    assert_error(api(world.member).patch(path(world.viewer), {"role": "member"}), 403)
    assert_error(api(world.admin).patch(path(world.viewer), {"role": "king"}), 400, field="role")
    # The last owner cannot step down: a state conflict, nothing changes.
    assert_error(api(world.owner).patch(path(world.owner), {"role": "admin"}), 409, "conflict")
    assert world.membership(world.owner).role == "owner"
    # A membership of another team is not found through this one.
    beta = Membership.objects.get(team=world.other_team, user=world.stranger)
    other = f"/api/v1/teams/{world.team.pk}/members/{beta.pk}"
    assert_error(api(world.owner).patch(other, {"role": "viewer"}), 404)


def test_remove_and_leave(world):
    def path(user):
        return f"/api/v1/teams/{world.team.pk}/members/{world.membership(user).pk}"

    assert_error(api(world.member).delete(path(world.viewer)), 403)
    assert_error(api(world.admin).delete(path(world.owner)), 403)  # only owners remove owners
    assert api(world.admin).delete(path(world.viewer)).status_code == 204
    assert not Membership.objects.filter(team=world.team, user=world.viewer).exists()
    event = AuditEvent.objects.get(action="team.member_remove")
    assert event.before == {"user": "viewer", "role": "viewer"}
    # Leaving: your own membership, any role; the last owner cannot leave.
    assert api(world.member).post(f"/api/v1/teams/{world.team.pk}/leave").status_code == 204
    assert_error(api(world.owner).post(f"/api/v1/teams/{world.team.pk}/leave"), 409, "conflict")
    assert api(world.admin).delete(path(world.admin)).status_code == 204
    assert list(Membership.objects.filter(team=world.team).values_list("role", flat=True)) == [
        "owner"
    ]
