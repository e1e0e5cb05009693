"""The effective limits for a (user, team) pair, and the usage they are measured against."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import Q, Sum
from django.utils import timezone

from .models import LimitPolicy

# policy field -> run config field, for the per-run maxima.
MAXIMA = {
    "max_cpu_cores": "cpu_cores",
    "max_memory_mb": "memory_mb",
    "max_disk_mb": "disk_mb",
    "max_timeout_seconds": "timeout_seconds",
}
LISTS = ("allowed_network_modes", "allowed_images", "allowed_providers")
LABELS = {
    "max_concurrent_runs": "concurrent runs",
    "max_cpu_cores": "CPU cores",
    "max_memory_mb": "memory (MB)",
    "max_disk_mb": "disk (MB)",
    "max_timeout_seconds": "wall-clock timeout (s)",
    "allowed_network_modes": "network modes",
    "allowed_images": "images",
    "allowed_providers": "providers",
    "monthly_token_budget": "monthly tokens",
    "monthly_cost_budget_usd": "monthly cost (USD)",
}
ACTIVE_STATES = ("provisioning", "running", "cancelling")


@dataclass(frozen=True)
class Limit:
    value: Any
    source: str  # "instance limit", "team Alpha limit", "your user limit", "hardware ceiling"

    def __bool__(self) -> bool:
        return self.value is not None


@dataclass
class EffectiveLimits:
    values: dict[str, Limit] = field(default_factory=dict)  # value limits, by policy field
    user_concurrency: Limit = Limit(None, "")
    team_concurrency: Limit = Limit(None, "")
    user_tokens: Limit = Limit(None, "")
    user_cost: Limit = Limit(None, "")
    team_tokens: Limit = Limit(None, "")
    team_cost: Limit = Limit(None, "")

    def get(self, name: str) -> Limit:
        return self.values.get(name, Limit(None, ""))

    def rows(self) -> list[tuple[str, Limit]]:
        """(label, limit) for display, in a stable order."""
        out = [(LABELS[name], self.get(name)) for name in (*MAXIMA, *LISTS)]
        out += [
            ("concurrent runs (user)", self.user_concurrency),
            ("concurrent runs (team)", self.team_concurrency),
            ("monthly tokens (user)", self.user_tokens),
            ("monthly cost USD (user)", self.user_cost),
            ("monthly tokens (team)", self.team_tokens),
            ("monthly cost USD (team)", self.team_cost),
        ]
        return out


def _policies(user_id: int | None, team_id: int | None) -> dict[str, LimitPolicy]:
    query = Q(scope=LimitPolicy.Scope.INSTANCE)
    if user_id is not None:
        query |= Q(scope=LimitPolicy.Scope.USER, user_id=user_id)
    if team_id is not None:
        query |= Q(scope=LimitPolicy.Scope.TEAM, team_id=team_id)
    return {p.scope: p for p in LimitPolicy.objects.filter(query).select_related("team")}


def _source(policy: LimitPolicy) -> str:
    if policy.scope == LimitPolicy.Scope.TEAM:
        return f"team {policy.team.name} limit"
    if policy.scope == LimitPolicy.Scope.USER:
        return "your user limit"
    return "instance limit"


def _first(chain: list[LimitPolicy], name: str) -> Limit:
    for policy in chain:
        value = getattr(policy, name)
        if value is not None:
            return Limit(value, _source(policy))
    return Limit(None, "")


def effective_limits(*, user_id: int | None, team_id: int | None) -> EffectiveLimits:
    """Value limits: user row, then team row, then instance row, capped by the hardware ceiling.
    Scoped limits (concurrency, budgets): the user's own (or the instance default) for the user,
    the team's own (or the instance default) for the team."""
    rows = _policies(user_id, team_id)
    instance = rows.get(LimitPolicy.Scope.INSTANCE)
    chain = [p for p in (rows.get("user"), rows.get("team"), instance) if p is not None]
    result = EffectiveLimits()
    for name, config_name in MAXIMA.items():
        limit = _first(chain, name)
        ceiling = settings.RUN_LIMITS[config_name]
        if limit.value is None or limit.value > ceiling:
            limit = Limit(ceiling, "hardware ceiling")
        result.values[name] = limit
    for name in LISTS:
        result.values[name] = _first(chain, name)
    user_chain = [p for p in (rows.get("user"), instance) if p is not None]
    team_chain = [p for p in (rows.get("team"), instance) if p is not None] if team_id else []
    result.user_concurrency = _first(user_chain, "max_concurrent_runs")
    result.user_tokens = _first(user_chain, "monthly_token_budget")
    result.user_cost = _first(user_chain, "monthly_cost_budget_usd")
    result.team_concurrency = _first(team_chain, "max_concurrent_runs")
    result.team_tokens = _first(team_chain, "monthly_token_budget")
    result.team_cost = _first(team_chain, "monthly_cost_budget_usd")
    return result


def effective_limits_for_team(*, team: Any) -> EffectiveLimits:
    return effective_limits(user_id=None, team_id=team.pk)


def month_start(now: dt.datetime | None = None) -> dt.datetime:
    now = timezone.localtime(now or timezone.now())
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Spend:
    tokens: int
    cost: Decimal


def _runs():
    from apps.runs.models import Run

    return Run.objects


def month_spend(*, user_id: int | None = None, team_id: int | None = None) -> Spend:
    """Tokens and dollars used this calendar month by the user's runs or the team's runs
    (running runs included: the recorder keeps their totals current)."""
    queryset = _runs().filter(created_at__gte=month_start())
    if team_id is not None:
        queryset = queryset.filter(project__team_id=team_id)
    else:
        queryset = queryset.filter(user_id=user_id)
    totals = queryset.aggregate(tokens=Sum("total_tokens"), cost=Sum("cost_usd"))
    return Spend(tokens=int(totals["tokens"] or 0), cost=Decimal(totals["cost"] or 0))


def active_count(*, user_id: int | None = None, team_id: int | None = None) -> int:
    """Runs holding a slot (claimed and not finished) for the user, or for the team."""
    runs = _runs().filter(status__in=ACTIVE_STATES)
    if team_id is not None:
        return runs.filter(project__team_id=team_id).count()
    return runs.filter(user_id=user_id).count()


# -- the admins' screen ---------------------------------------------------------------------------


def require_limits_admin(user: Any) -> None:
    """Limits are set by instance admins only (the limits screen and the API)."""
    if not (user.is_authenticated and user.is_staff):
        raise PermissionDenied("Only instance admins manage limits.")


def get_policy(*, scope: str, team: Any = None, user: Any = None) -> LimitPolicy:
    """The row for the instance, a team or a user; an unsaved, empty one when none exists yet."""
    if scope == LimitPolicy.Scope.INSTANCE:
        team = user = None
    lookup = {"scope": scope, "team": team, "user": user}
    return LimitPolicy.objects.filter(**lookup).select_related(
        "team", "user", "updated_by"
    ).first() or LimitPolicy(**lookup)


def list_overrides() -> Any:
    """Every team and user row (the instance default is not an override)."""
    return (
        LimitPolicy.objects.exclude(scope=LimitPolicy.Scope.INSTANCE)
        .select_related("team", "user", "updated_by")
        .order_by("scope", "team__name", "user__username")
    )
