from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from . import services
from .models import Role, rank
from .selectors import (
    get_invitation_for_user,
    get_membership,
    get_team_for_user,
    list_teams_for_user,
    members_of,
    pending_invitations_for,
    pending_invitations_of,
)


def _error_text(exc: ValidationError) -> str:
    return "; ".join(exc.messages)


@login_required
@require_GET
def team_list(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "teams/list.html",
        {
            "teams": list_teams_for_user(user=request.user),
            "invitations": pending_invitations_for(user=request.user),
        },
    )


@login_required
@require_POST
def team_create(request: HttpRequest) -> HttpResponse:
    try:
        team = services.create_team(user=request.user, name=request.POST.get("name", ""))
    except ValidationError as exc:
        messages.error(request, _error_text(exc))
        return redirect("teams:list")
    messages.success(request, f"Team {team.name} created; you are its owner.")
    return redirect("teams:detail", team_id=team.pk)


@login_required
@require_GET
def team_detail(request: HttpRequest, team_id: int) -> HttpResponse:
    team, role = get_team_for_user(user=request.user, team_id=team_id)
    from apps.limits.selectors import effective_limits_for_team

    manage = rank(role) >= rank(Role.ADMIN)
    grantable = [r for r in Role if r != Role.OWNER or role == Role.OWNER]
    return render(
        request,
        "teams/detail.html",
        {
            "team": team,
            "role": role,
            "manage": manage,
            "grantable": grantable,
            "members": members_of(team=team),
            "invitations": pending_invitations_of(team=team) if manage else [],
            "projects": team.projects.filter(archived_at__isnull=True).select_related("owner"),
            "limits": effective_limits_for_team(team=team),
        },
    )


@login_required
@require_POST
def team_invite(request: HttpRequest, team_id: int) -> HttpResponse:
    team, role = get_team_for_user(user=request.user, team_id=team_id, min_role=Role.ADMIN)
    try:
        invitation = services.invite(
            team=team,
            actor=request.user,
            actor_role=role,
            who=request.POST.get("who", ""),
            role=request.POST.get("role", Role.MEMBER),
        )
    except ValidationError as exc:
        messages.error(request, _error_text(exc))
    else:
        messages.success(
            request, f"Invited {invitation.user.get_username()} as {invitation.get_role_display()}."
        )
    return redirect("teams:detail", team_id=team.pk)


@login_required
@require_POST
def member_role(request: HttpRequest, team_id: int, membership_id: int) -> HttpResponse:
    team, role = get_team_for_user(user=request.user, team_id=team_id, min_role=Role.ADMIN)
    membership = get_membership(team=team, membership_id=membership_id)
    try:
        services.change_role(
            membership=membership,
            actor=request.user,
            actor_role=role,
            role=request.POST.get("role", ""),
        )
    except ValidationError as exc:
        messages.error(request, _error_text(exc))
    else:
        messages.success(
            request, f"{membership.user.get_username()} is now {request.POST['role']}."
        )
    return redirect("teams:detail", team_id=team.pk)


@login_required
@require_POST
def member_remove(request: HttpRequest, team_id: int, membership_id: int) -> HttpResponse:
    team, role = get_team_for_user(user=request.user, team_id=team_id)
    membership = get_membership(team=team, membership_id=membership_id)
    # Who may remove whom is the service's rule (PermissionDenied is a 403 here too).
    try:
        services.remove_member(membership=membership, actor=request.user, actor_role=role)
    except ValidationError as exc:
        messages.error(request, _error_text(exc))
        return redirect("teams:detail", team_id=team.pk)
    if membership.user_id == request.user.pk:
        messages.success(request, f"You left {team.name}.")
        return redirect("teams:list")
    messages.success(request, f"Removed {membership.user.get_username()} from {team.name}.")
    return redirect("teams:detail", team_id=team.pk)


@login_required
@require_POST
def invitation_revoke(request: HttpRequest, team_id: int, invitation_id: int) -> HttpResponse:
    team, role = get_team_for_user(user=request.user, team_id=team_id, min_role=Role.ADMIN)
    try:
        invitation = pending_invitations_of(team=team).get(pk=invitation_id)
    except ObjectDoesNotExist:
        raise Http404("No such invitation") from None
    try:
        services.revoke_invitation(invitation=invitation, actor=request.user, actor_role=role)
    except ValidationError as exc:  # answered a moment ago
        messages.error(request, _error_text(exc))
    else:
        messages.success(request, f"Invitation for {invitation.user.get_username()} revoked.")
    return redirect("teams:detail", team_id=team.pk)


@login_required
@require_POST
def invitation_respond(request: HttpRequest, invitation_id: int) -> HttpResponse:
    invitation = get_invitation_for_user(user=request.user, invitation_id=invitation_id)
    try:
        if request.POST.get("decision") == "accept":
            services.accept_invitation(invitation=invitation, user=request.user)
            messages.success(request, f"You joined {invitation.team.name}.")
            return redirect("teams:detail", team_id=invitation.team_id)
        services.decline_invitation(invitation=invitation, user=request.user)
        messages.success(request, f"Invitation to {invitation.team.name} declined.")
    except ValidationError as exc:
        messages.error(request, _error_text(exc))
    return redirect("teams:list")
