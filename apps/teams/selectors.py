"""Reads of teams and the role rules every other app asks.

``role_in_project`` is the single answer to "what may this user do with this project": the
project's creator acts as its owner; otherwise the user's role in the project's team, if any.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import Http404

from .models import Invitation, Membership, Role, Team, rank

User = AbstractBaseUser | AnonymousUser


def team_ids_of(user: User) -> QuerySet:
    """A subquery of the ids of the teams ``user`` belongs to (any role)."""
    return Membership.objects.filter(user_id=user.pk).values("team_id")


def teams_of(user: User) -> QuerySet[Team]:
    if not user.is_authenticated:
        return Team.objects.none()
    return Team.objects.filter(pk__in=team_ids_of(user))


def teams_where(*, user: User, min_role: str, also: int | None = None) -> QuerySet[Team]:
    """Teams where ``user`` has at least ``min_role`` (plus team ``also``, if given)."""
    if user is None or not user.is_authenticated:
        return Team.objects.filter(pk=also) if also else Team.objects.none()
    roles = [role for role in Role if rank(role) >= rank(min_role)]
    mine = Membership.objects.filter(user_id=user.pk, role__in=roles).values("team_id")
    return (
        Team.objects.filter(Q(pk__in=mine) | Q(pk=also))
        if also
        else Team.objects.filter(pk__in=mine)
    )


def list_teams_for_user(*, user: User) -> list[tuple[Team, str]]:
    memberships = (
        Membership.objects.filter(user_id=user.pk)
        .select_related("team")
        .annotate(member_count=Count("team__memberships"))
        .order_by("team__name")
    )
    return [(m.team, m.role, m.member_count) for m in memberships]  # type: ignore[misc]


def role_in_team(*, user: User, team_id: int | None) -> str | None:
    if team_id is None or not user.is_authenticated:
        return None
    return (
        Membership.objects.filter(team_id=team_id, user_id=user.pk)
        .values_list("role", flat=True)
        .first()
    )


def get_team_for_user(*, user: User, team_id: Any, min_role: str = Role.VIEWER) -> tuple[Team, str]:
    """The team and the user's role in it: Http404 for non-members (and forged ids),
    PermissionDenied (403) for members below ``min_role``."""
    try:
        team_id = int(team_id)
    except (TypeError, ValueError):
        raise Http404("No such team") from None
    role = role_in_team(user=user, team_id=team_id)
    if role is None:
        raise Http404("No such team")
    if rank(role) < rank(min_role):
        raise PermissionDenied(f"Your role in this team ({role}) does not allow this.")
    return Team.objects.get(pk=team_id), role


def role_in_project(*, user: User, project: Any) -> str | None:
    if not user.is_authenticated:
        return None
    if project.owner_id == user.pk:
        return Role.OWNER
    return role_in_team(user=user, team_id=project.team_id)


def require_project_role(*, user: User, project: Any, min_role: str) -> str:
    """403 unless the user's role in the project reaches ``min_role``. Call after the project
    was fetched through the access-checked selector (strangers already got 404)."""
    role = role_in_project(user=user, project=project)
    if rank(role) < rank(min_role):
        raise PermissionDenied(
            f"Your role on this project ({role or 'none'}) does not allow this; "
            f"it needs {min_role} or higher."
        )
    return role  # type: ignore[return-value]


def can_launch(*, user: User, project: Any) -> bool:
    return rank(role_in_project(user=user, project=project)) >= rank(Role.MEMBER)


def can_manage_project(*, user: User, project: Any) -> bool:
    return rank(role_in_project(user=user, project=project)) >= rank(Role.ADMIN)


def members_of(*, team: Team) -> QuerySet[Membership]:
    return team.memberships.select_related("user").order_by("user__username")


def pending_invitations_for(*, user: User) -> QuerySet[Invitation]:
    if not user.is_authenticated:
        return Invitation.objects.none()
    return Invitation.objects.filter(
        user_id=user.pk, status=Invitation.Status.PENDING
    ).select_related("team", "invited_by")


def get_invitation_for_user(*, user: User, invitation_id: Any) -> Invitation:
    """The user's own pending invitation, or 404."""
    try:
        return pending_invitations_for(user=user).get(pk=int(invitation_id))
    except (Invitation.DoesNotExist, TypeError, ValueError):
        raise Http404("No such invitation") from None


def pending_invitations_of(*, team: Team) -> QuerySet[Invitation]:
    """The team's open invitations (the team page lists them to admins and owners)."""
    return team.invitations.filter(status=Invitation.Status.PENDING).select_related(
        "user", "invited_by"
    )


def get_invitation_of_team(*, team: Team, invitation_id: Any) -> Invitation:
    """One of the team's invitations in any state, or 404."""
    try:
        return team.invitations.select_related("user", "invited_by").get(pk=int(invitation_id))
    except (Invitation.DoesNotExist, TypeError, ValueError):
        raise Http404("No such invitation") from None


def get_own_invitation(*, user: User, invitation_id: Any) -> Invitation:
    """An invitation addressed to ``user`` in any state (so answering a revoked one can say
    so), or 404: someone else's invitation does not exist for them."""
    if not user.is_authenticated:
        raise Http404("No such invitation")
    try:
        return Invitation.objects.select_related("team", "invited_by").get(
            pk=int(invitation_id), user_id=user.pk
        )
    except (Invitation.DoesNotExist, TypeError, ValueError):
        raise Http404("No such invitation") from None


def get_membership(*, team: Team, membership_id: Any) -> Membership:
    """A membership of ``team``, or 404."""
    try:
        return Membership.objects.select_related("user").get(pk=int(membership_id), team=team)
    except (Membership.DoesNotExist, TypeError, ValueError):
        raise Http404("No such member") from None
