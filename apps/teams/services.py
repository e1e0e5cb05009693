"""Writes to teams: create, invite, accept/decline, change roles, remove members.

Every change is audited in its own transaction. Removing someone (or lowering them to a role
that no longer sees a run) rings their personal channel group after the commit, so their open
run sockets re-check access and close.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from apps.audit.services import Action, record

from .models import Invitation, Membership, Role, Team, rank


class TeamStateConflict(ValidationError):
    """The change is well-formed but the team's current state does not allow it: an invitation
    that is no longer open, a team that would lose its last owner. A ValidationError, so the
    pages show it like any other message; the API answers 409."""


def _access_changed_after_commit(user_id: int) -> None:
    from apps.runs.channels import notify_access_changed

    transaction.on_commit(lambda: notify_access_changed(user_id))


@transaction.atomic
def create_team(*, user: AbstractBaseUser, name: str) -> Team:
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": ["Give the team a name."]})
    taken = ValidationError({"name": [f"A team called {name} already exists."]})
    if Team.objects.filter(name__iexact=name).exists():
        raise taken
    try:
        with transaction.atomic():  # a concurrent create of the same name loses here, not in a 500
            team = Team.objects.create(name=name[:100], created_by=user)
    except IntegrityError:
        raise taken from None
    Membership.objects.create(team=team, user=user, role=Role.OWNER)
    record(
        actor=user,
        action=Action.TEAM_CREATE,
        target=team,
        team_id=team.pk,
        after={"name": team.name, "owner": user.get_username()},
    )
    return team


def _find_user(identifier: str) -> Any:
    identifier = (identifier or "").strip()
    if not identifier:
        raise ValidationError({"who": ["Enter a username or an email address."]})
    users = get_user_model().objects.filter(is_active=True)
    found = list(users.filter(Q(username__iexact=identifier) | Q(email__iexact=identifier))[:2])
    if len(found) != 1:
        # Same words whether nobody or several match: the form must not enumerate accounts.
        raise ValidationError(
            {"who": [f"No single user on this instance is called or has the email {identifier}."]}
        )
    return found[0]


def _check_can_grant(*, actor_role: str, role: str) -> None:
    if role not in Role.values:
        raise ValidationError({"role": ["Choose owner, admin, member or viewer."]})
    if role == Role.OWNER and actor_role != Role.OWNER:
        raise PermissionDenied("Only an owner can make someone an owner.")


@transaction.atomic
def invite(
    *, team: Team, actor: AbstractBaseUser, actor_role: str, who: str, role: str
) -> Invitation:
    """Invite an existing user (by username or email) with ``role``. Needs admin or owner."""
    if rank(actor_role) < rank(Role.ADMIN):
        raise PermissionDenied("Only team admins and owners can invite.")
    _check_can_grant(actor_role=actor_role, role=role)
    user = _find_user(who)
    if Membership.objects.filter(team=team, user=user).exists():
        raise ValidationError({"who": [f"{user.get_username()} is already in {team.name}."]})
    if Invitation.objects.filter(team=team, user=user, status=Invitation.Status.PENDING).exists():
        raise ValidationError({"who": [f"{user.get_username()} already has a pending invitation."]})
    invitation = Invitation.objects.create(team=team, user=user, role=role, invited_by=actor)
    record(
        actor=actor,
        action=Action.INVITE,
        target=invitation,
        team_id=team.pk,
        target_repr=f"{user.get_username()} to {team.name}",
        after={"user": user.get_username(), "role": role},
    )
    return invitation


@transaction.atomic
def accept_invitation(*, invitation: Invitation, user: AbstractBaseUser) -> Membership:
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.user_id != user.pk or invitation.status != Invitation.Status.PENDING:
        raise TeamStateConflict("This invitation is no longer open.")
    invitation.status = Invitation.Status.ACCEPTED
    invitation.responded_at = timezone.now()
    invitation.save(update_fields=["status", "responded_at"])
    try:
        with transaction.atomic():
            membership = Membership.objects.create(
                team_id=invitation.team_id, user=user, role=invitation.role
            )
    except IntegrityError:
        raise TeamStateConflict("You are already a member of this team.") from None
    record(
        actor=user,
        action=Action.INVITE_ACCEPT,
        target=membership,
        team_id=invitation.team_id,
        after={"user": user.get_username(), "role": invitation.role},
    )
    return membership


@transaction.atomic
def decline_invitation(*, invitation: Invitation, user: AbstractBaseUser) -> Invitation:
    updated = Invitation.objects.filter(
        pk=invitation.pk, user_id=user.pk, status=Invitation.Status.PENDING
    ).update(status=Invitation.Status.DECLINED, responded_at=timezone.now())
    if not updated:
        raise TeamStateConflict("This invitation is no longer open.")
    record(
        actor=user,
        action=Action.INVITE_DECLINE,
        target=invitation,
        team_id=invitation.team_id,
        target_repr=f"{user.get_username()} to team {invitation.team_id}",
    )
    invitation.refresh_from_db()
    return invitation


@transaction.atomic
def revoke_invitation(*, invitation: Invitation, actor: AbstractBaseUser, actor_role: str) -> None:
    if rank(actor_role) < rank(Role.ADMIN):
        raise PermissionDenied("Only team admins and owners can revoke invitations.")
    updated = Invitation.objects.filter(
        pk=invitation.pk, team_id=invitation.team_id, status=Invitation.Status.PENDING
    ).update(status=Invitation.Status.REVOKED, responded_at=timezone.now())
    if not updated:
        # Answered or revoked meanwhile: nothing changed, so nothing is audited.
        raise TeamStateConflict("This invitation is no longer open.")
    record(actor=actor, action=Action.INVITE_REVOKE, target=invitation, team_id=invitation.team_id)


def _owners_left(team_id: int, excluding: int) -> int:
    return Membership.objects.filter(team_id=team_id, role=Role.OWNER).exclude(pk=excluding).count()


@transaction.atomic
def change_role(
    *, membership: Membership, actor: AbstractBaseUser, actor_role: str, role: str
) -> Membership:
    """Admins change roles among viewer/member/admin; owners may also grant or take ownership.
    A team always keeps one owner."""
    if rank(actor_role) < rank(Role.ADMIN):
        raise PermissionDenied("Only team admins and owners can change roles.")
    _check_can_grant(actor_role=actor_role, role=role)
    membership = Membership.objects.select_for_update().select_related("user").get(pk=membership.pk)
    if membership.role == Role.OWNER and actor_role != Role.OWNER:
        raise PermissionDenied("Only an owner can change another owner's role.")
    before = membership.role
    if before == role:
        return membership
    # Lock the team's owner rows, so two owners demoting each other cannot both succeed.
    list(Membership.objects.select_for_update().filter(team_id=membership.team_id, role=Role.OWNER))
    if before == Role.OWNER and not _owners_left(membership.team_id, membership.pk):
        raise TeamStateConflict("A team needs at least one owner; make someone else owner first.")
    membership.role = role
    membership.save(update_fields=["role"])
    record(
        actor=actor,
        action=Action.ROLE_CHANGE,
        target=membership,
        team_id=membership.team_id,
        target_repr=f"{membership.user.get_username()} in team {membership.team_id}",
        before={"role": before},
        after={"role": role},
    )
    _access_changed_after_commit(membership.user_id)
    return membership


@transaction.atomic
def remove_member(*, membership: Membership, actor: AbstractBaseUser, actor_role: str) -> None:
    """Admins remove members (owners remove anyone); anyone may leave. The removed user's open
    sockets on the team's runs are closed after the commit."""
    membership = Membership.objects.select_for_update().select_related("user").get(pk=membership.pk)
    leaving = membership.user_id == actor.pk
    if not leaving:
        if rank(actor_role) < rank(Role.ADMIN):
            raise PermissionDenied("Only team admins and owners can remove members.")
        if membership.role == Role.OWNER and actor_role != Role.OWNER:
            raise PermissionDenied("Only an owner can remove an owner.")
    list(Membership.objects.select_for_update().filter(team_id=membership.team_id, role=Role.OWNER))
    if membership.role == Role.OWNER and not _owners_left(membership.team_id, membership.pk):
        raise TeamStateConflict("A team needs at least one owner; make someone else owner first.")
    record(
        actor=actor,
        action=Action.MEMBER_REMOVE,
        target=membership,
        team_id=membership.team_id,
        target_repr=f"{membership.user.get_username()} in team {membership.team_id}",
        before={"user": membership.user.get_username(), "role": membership.role},
        after=None,
    )
    user_id = membership.user_id
    membership.delete()
    _access_changed_after_commit(user_id)
