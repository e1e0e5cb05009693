"""/api/v1/teams and /api/v1/invitations: what the team pages do, through apps/teams' own
selectors and services (the same role rules, audit entries and socket closing)."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router, Status

from apps.teams import services
from apps.teams.models import Invitation, Membership, Role, Team
from apps.teams.selectors import (
    get_invitation_of_team,
    get_membership,
    get_own_invitation,
    get_team_for_user,
    list_teams_for_user,
    members_of,
    pending_invitations_for,
    pending_invitations_of,
)

from ..auth import token_auth
from ..schemas import (
    Id,
    InvitationListOut,
    InvitationOut,
    InviteIn,
    MemberListOut,
    MemberOut,
    MemberRoleIn,
    TeamIn,
    TeamListOut,
    TeamOut,
)
from .common import ERRORS, errors

router = Router(tags=["teams"])
READ = token_auth("teams:read")
WRITE = token_auth("teams:write")


def team_out(team: Team, *, role: str, members: int) -> dict:
    return {
        "id": team.pk,
        "name": team.name,
        "role": role,
        "members": members,
        "created_at": team.created_at,
    }


def member_out(membership: Membership, *, user) -> dict:
    return {
        "id": membership.pk,
        "user": membership.user.get_username(),
        "email": membership.user.email or "",
        "role": membership.role,
        "since": membership.created_at,
        "you": membership.user_id == user.pk,
    }


def invitation_out(invitation: Invitation) -> dict:
    return {
        "id": invitation.pk,
        "team": invitation.team_id,
        "team_name": invitation.team.name,
        "user": invitation.user.get_username(),
        "role": invitation.role,
        "status": invitation.status,
        "invited_by": invitation.invited_by.get_username() if invitation.invited_by else None,
        "created_at": invitation.created_at,
        "responded_at": invitation.responded_at,
    }


def _team_out(team: Team, role: str) -> dict:
    return team_out(team, role=role, members=team.memberships.count())


@router.get(
    "/teams",
    auth=READ,
    response={200: TeamListOut, **errors(401, 403, 429)},
    summary="Your teams, with your role and their size",
)
def list_teams(request: HttpRequest) -> dict:
    return {
        "items": [
            team_out(team, role=role, members=count)
            for team, role, count in list_teams_for_user(user=request.user)
        ]
    }


@router.post(
    "/teams",
    auth=WRITE,
    response={201: TeamOut, **errors(400, 401, 403, 429)},
    summary="Create a team; you become its owner",
)
def create_team(request: HttpRequest, payload: TeamIn) -> Status:
    team = services.create_team(user=request.user, name=payload.name)
    return Status(201, team_out(team, role=Role.OWNER, members=1))


@router.get(
    "/teams/{team_id}",
    auth=READ,
    response={200: TeamOut, **ERRORS},
    summary="One of your teams",
)
def get_team(request: HttpRequest, team_id: Id) -> dict:
    team, role = get_team_for_user(user=request.user, team_id=team_id)
    return _team_out(team, role)


@router.get(
    "/teams/{team_id}/members",
    auth=READ,
    response={200: MemberListOut, **ERRORS},
    summary="The team's members and their roles (any member)",
)
def list_members(request: HttpRequest, team_id: Id) -> dict:
    team, _role = get_team_for_user(user=request.user, team_id=team_id)
    return {"items": [member_out(m, user=request.user) for m in members_of(team=team)]}


@router.patch(
    "/teams/{team_id}/members/{membership_id}",
    auth=WRITE,
    response={200: MemberOut, **ERRORS},
    summary="Change a member's role (admins; owners also grant or take ownership)",
)
def change_role(request: HttpRequest, team_id: Id, membership_id: Id, payload: MemberRoleIn):
    team, role = get_team_for_user(user=request.user, team_id=team_id, min_role=Role.ADMIN)
    membership = services.change_role(
        membership=get_membership(team=team, membership_id=membership_id),
        actor=request.user,
        actor_role=role,
        role=payload.role,
    )
    return member_out(membership, user=request.user)


@router.delete(
    "/teams/{team_id}/members/{membership_id}",
    auth=WRITE,
    response={204: None, **ERRORS},
    summary="Remove a member (admins; owners remove anyone) or, with your own, leave",
)
def remove_member(request: HttpRequest, team_id: Id, membership_id: Id) -> Status:
    team, role = get_team_for_user(user=request.user, team_id=team_id)
    membership = get_membership(team=team, membership_id=membership_id)
    services.remove_member(membership=membership, actor=request.user, actor_role=role)
    return Status(204, None)


@router.post(
    "/teams/{team_id}/leave",
    auth=WRITE,
    response={204: None, **ERRORS},
    summary="Leave the team (409 for its last owner)",
)
def leave_team(request: HttpRequest, team_id: Id) -> Status:
    team, role = get_team_for_user(user=request.user, team_id=team_id)
    membership = Membership.objects.get(team=team, user_id=request.user.pk)
    services.remove_member(membership=membership, actor=request.user, actor_role=role)
    return Status(204, None)


# -- invitations ---------------------------------------------------------------------------------


@router.get(
    "/teams/{team_id}/invitations",
    auth=READ,
    response={200: InvitationListOut, **ERRORS},
    summary="The team's pending invitations (admins and owners, as on the team page)",
)
def list_team_invitations(request: HttpRequest, team_id: Id) -> dict:
    team, _role = get_team_for_user(user=request.user, team_id=team_id, min_role=Role.ADMIN)
    return {"items": [invitation_out(i) for i in pending_invitations_of(team=team)]}


@router.post(
    "/teams/{team_id}/invitations",
    auth=WRITE,
    response={201: InvitationOut, **ERRORS},
    summary="Invite an existing user by username or email (admins; owners may invite owners)",
)
def invite(request: HttpRequest, team_id: Id, payload: InviteIn) -> Status:
    team, role = get_team_for_user(user=request.user, team_id=team_id, min_role=Role.ADMIN)
    invitation = services.invite(
        team=team, actor=request.user, actor_role=role, who=payload.who, role=payload.role
    )
    return Status(201, invitation_out(invitation))


@router.post(
    "/teams/{team_id}/invitations/{invitation_id}/revoke",
    auth=WRITE,
    response={200: InvitationOut, **ERRORS},
    summary="Cancel a pending invitation (admins; 409 once it was answered or cancelled)",
)
def revoke_invitation(request: HttpRequest, team_id: Id, invitation_id: Id) -> dict:
    team, role = get_team_for_user(user=request.user, team_id=team_id, min_role=Role.ADMIN)
    invitation = get_invitation_of_team(team=team, invitation_id=invitation_id)
    services.revoke_invitation(invitation=invitation, actor=request.user, actor_role=role)
    invitation.refresh_from_db()
    return invitation_out(invitation)


@router.get(
    "/invitations",
    auth=READ,
    response={200: InvitationListOut, **errors(401, 403, 429)},
    summary="Invitations waiting for your answer",
)
def my_invitations(request: HttpRequest) -> dict:
    return {
        "items": [
            invitation_out(i)
            for i in pending_invitations_for(user=request.user).select_related("user")
        ]
    }


@router.post(
    "/invitations/{invitation_id}/accept",
    auth=WRITE,
    response={200: TeamOut, **ERRORS},
    summary="Accept an invitation addressed to you and join the team (409 if no longer open)",
)
def accept_invitation(request: HttpRequest, invitation_id: Id) -> dict:
    invitation = get_own_invitation(user=request.user, invitation_id=invitation_id)
    membership = services.accept_invitation(invitation=invitation, user=request.user)
    return _team_out(invitation.team, membership.role)


@router.post(
    "/invitations/{invitation_id}/decline",
    auth=WRITE,
    response={200: InvitationOut, **ERRORS},
    summary="Decline an invitation addressed to you (409 if no longer open)",
)
def decline_invitation(request: HttpRequest, invitation_id: Id) -> dict:
    invitation = get_own_invitation(user=request.user, invitation_id=invitation_id)
    return invitation_out(services.decline_invitation(invitation=invitation, user=request.user))
