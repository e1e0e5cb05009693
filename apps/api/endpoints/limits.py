"""/api/v1/limits (instance admins: the limits screen) and /api/v1/usage (everyone: the usage
page). Values are checked by the admin screen's own form and saved by its service, so the rules,
the messages and the audit entry (same transaction) are the screen's."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404, HttpRequest
from ninja import Query, Router, Status

from apps.limits import services, usage
from apps.limits.forms import LimitPolicyForm
from apps.limits.models import LimitPolicy
from apps.limits.selectors import get_policy, list_overrides, require_limits_admin
from apps.teams.models import Team

from ..auth import token_auth
from ..schemas import Id, LimitPolicyOut, LimitPolicyPatch, LimitsOut, UsageReportOut, text
from .common import ERRORS, errors

router = Router(tags=["limits"])
READ = token_auth("limits:read")
WRITE = token_auth("limits:write")


def policy_out(policy: LimitPolicy) -> dict:
    cost = policy.monthly_cost_budget_usd
    return {
        **{name: getattr(policy, name) for name in services.POLICY_FIELDS},
        "monthly_cost_budget_usd": str(Decimal(cost).quantize(Decimal("0.01")))
        if cost is not None
        else None,
        "id": policy.pk,
        "scope": policy.scope,
        "team": policy.team_id,
        "team_name": policy.team.name if policy.team_id else None,
        "user": policy.user.get_username() if policy.user_id else None,
        "updated_at": policy.updated_at,
        "updated_by": policy.updated_by.get_username() if policy.updated_by_id else None,
    }


def _form_data(values: dict[str, Any]) -> dict[str, Any]:
    """The admin form's POST for ``values`` (empty = inherit), so its clean_* rules apply."""
    data: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            data[name] = [] if name == "allowed_network_modes" else ""
        elif name == "allowed_network_modes":
            data[name] = list(value)
        elif name in {"allowed_images", "allowed_providers"}:
            data[name] = "\n".join(value)
        else:
            data[name] = str(value)
    return data


def _save(request: HttpRequest, *, scope: str, payload: LimitPolicyPatch, team=None, user=None):
    require_limits_admin(request.user)
    with transaction.atomic():
        current = get_policy(scope=scope, team=team, user=user)
        values = {name: getattr(current, name) for name in services.POLICY_FIELDS}
        values.update(payload.model_dump(exclude_unset=True))
        # The row itself as the form's instance, as on the screen: the model's constraints
        # (one instance row, scope matches target) are validated against it.
        form = LimitPolicyForm(_form_data(values), instance=current)
        if not form.is_valid():
            raise ValidationError({f: list(e) for f, e in form.errors.items()})
        policy = services.save_policy(
            actor=request.user, scope=scope, values=form.values(), team=team, user=user
        )
    return policy_out(get_policy(scope=policy.scope, team=policy.team, user=policy.user))


def _team(team_id: int) -> Team:
    team = Team.objects.filter(pk=team_id).first()
    if team is None:
        raise Http404("No such team")
    return team


def _user(username: str):
    user = get_user_model().objects.filter(username__iexact=username.strip()).first()
    if user is None:
        raise Http404("No such user")
    return user


def _delete(request: HttpRequest, *, scope: str, team=None, user=None) -> Status:
    require_limits_admin(request.user)
    policy = get_policy(scope=scope, team=team, user=user)
    if policy.pk is None:
        raise Http404("No override here")
    services.delete_policy(actor=request.user, policy=policy)
    return Status(204, None)


@router.get(
    "/limits",
    auth=READ,
    response={200: LimitsOut, **errors(401, 403, 429)},
    summary="Every limit: the instance default, team and user overrides, the ceiling (admins)",
)
def list_limits(request: HttpRequest) -> dict:
    require_limits_admin(request.user)
    overrides = list(list_overrides())
    return {
        "instance": policy_out(get_policy(scope=LimitPolicy.Scope.INSTANCE)),
        "teams": [policy_out(p) for p in overrides if p.scope == LimitPolicy.Scope.TEAM],
        "users": [policy_out(p) for p in overrides if p.scope == LimitPolicy.Scope.USER],
        "ceiling": [{"label": label, "value": value} for label, value in services.ceiling_rows()],
    }


@router.get(
    "/limits/instance",
    auth=READ,
    response={200: LimitPolicyOut, **ERRORS},
    summary="The instance default limits (admins)",
)
def get_instance_limits(request: HttpRequest) -> dict:
    require_limits_admin(request.user)
    return policy_out(get_policy(scope=LimitPolicy.Scope.INSTANCE))


@router.patch(
    "/limits/instance",
    auth=WRITE,
    response={200: LimitPolicyOut, **ERRORS},
    summary="Change the instance default limits (admins; audited)",
)
def update_instance_limits(request: HttpRequest, payload: LimitPolicyPatch) -> dict:
    return _save(request, scope=LimitPolicy.Scope.INSTANCE, payload=payload)


@router.get(
    "/limits/teams/{team_id}",
    auth=READ,
    response={200: LimitPolicyOut, **ERRORS},
    summary="A team's override (admins); id null when it has none",
)
def get_team_limits(request: HttpRequest, team_id: Id) -> dict:
    require_limits_admin(request.user)
    return policy_out(get_policy(scope=LimitPolicy.Scope.TEAM, team=_team(team_id)))


@router.patch(
    "/limits/teams/{team_id}",
    auth=WRITE,
    response={200: LimitPolicyOut, **ERRORS},
    summary="Set a team's override (admins; audited)",
)
def update_team_limits(request: HttpRequest, team_id: Id, payload: LimitPolicyPatch) -> dict:
    require_limits_admin(request.user)
    return _save(request, scope=LimitPolicy.Scope.TEAM, payload=payload, team=_team(team_id))


@router.delete(
    "/limits/teams/{team_id}",
    auth=WRITE,
    response={204: None, **ERRORS},
    summary="Remove a team's override; the defaults apply again (admins; audited)",
)
def delete_team_limits(request: HttpRequest, team_id: Id) -> Status:
    require_limits_admin(request.user)
    return _delete(request, scope=LimitPolicy.Scope.TEAM, team=_team(team_id))


@router.get(
    "/limits/users/{username}",
    auth=READ,
    response={200: LimitPolicyOut, **ERRORS},
    summary="A user's override (admins); id null when they have none",
)
def get_user_limits(request: HttpRequest, username: text(150)) -> dict:
    require_limits_admin(request.user)
    return policy_out(get_policy(scope=LimitPolicy.Scope.USER, user=_user(username)))


@router.patch(
    "/limits/users/{username}",
    auth=WRITE,
    response={200: LimitPolicyOut, **ERRORS},
    summary="Set a user's override (admins; audited)",
)
def update_user_limits(request: HttpRequest, username: text(150), payload: LimitPolicyPatch):
    require_limits_admin(request.user)
    return _save(request, scope=LimitPolicy.Scope.USER, payload=payload, user=_user(username))


@router.delete(
    "/limits/users/{username}",
    auth=WRITE,
    response={204: None, **ERRORS},
    summary="Remove a user's override (admins; audited)",
)
def delete_user_limits(request: HttpRequest, username: text(150)) -> Status:
    require_limits_admin(request.user)
    return _delete(request, scope=LimitPolicy.Scope.USER, user=_user(username))


# -- usage ---------------------------------------------------------------------------------------


@router.get(
    "/usage",
    auth=READ,
    response={200: UsageReportOut, **ERRORS},
    summary="The usage page: yours, one of your teams' (?team=) or a project's (?project=); "
    "admins any user's (?user=)",
)
def get_usage(
    request: HttpRequest,
    team: Query[Id | None] = None,
    project: Query[Id | None] = None,
    user: Query[text(150) | None] = None,
) -> dict:
    params = {k: v for k, v in {"team": team, "project": project, "user": user}.items() if v}
    report = usage.report_for_request(user=request.user, params=params)
    return {
        "title": report.title,
        "kind": report.kind,
        "month_runs": report.month_runs,
        "month_minutes": report.month_minutes,
        "month_tokens": report.month_tokens,
        "month_cost_usd": str(Decimal(report.month_cost).quantize(Decimal("0.01"))),
        "active": report.active,
        "daily": [
            {
                "title": chart.title,
                "total": chart.total,
                "days": [{"day": bar.label, "value": bar.value} for bar in chart.bars],
            }
            for chart in report.charts
        ],
        "headroom": [
            {
                "label": h.label,
                "used": h.used,
                "limit": h.limit,
                "source": h.source,
                "percent": h.percent,
            }
            for h in report.headroom
        ],
        "allowed": [
            {"label": label, "value": value, "source": source}
            for label, value, source in report.allowed
        ],
    }
