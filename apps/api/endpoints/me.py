"""/api/v1/me: who the token acts as, its rate limit, the caller's usage and limits."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.http import HttpRequest
from django.utils import timezone
from ninja import Router

from apps.limits.selectors import LISTS, MAXIMA, active_count, effective_limits, month_spend
from apps.projects import limits
from apps.runs.models import Run
from apps.runs.selectors import runs_visible_to
from apps.teams.selectors import list_teams_for_user

from ..auth import token_auth
from ..ratelimit import peek
from ..schemas import UsageOut
from .common import errors

router = Router(tags=["account"])


def _decimal_text(value) -> str:
    """A sum as plain text without the database's scale: PostgreSQL returns 1.250000 for what
    SQLite returns as 1.25, and API clients should see the same value from both."""
    return format(value.normalize(), "f") if value else "0"


def usage_of(user) -> dict:
    since = timezone.now() - dt.timedelta(days=30)
    mine = runs_visible_to(user).filter(user_id=user.pk)
    totals = mine.aggregate(
        runs=Count("pk"),
        active=Count("pk", filter=Q(status__in=Run.ACTIVE)),
        runs_30d=Count("pk", filter=Q(created_at__gte=since)),
        tokens_30d=Sum("total_tokens", filter=Q(created_at__gte=since), default=0),
        cost_30d=Sum("cost_usd", filter=Q(created_at__gte=since), default=0),
        tokens=Sum("total_tokens", default=0),
        cost=Sum("cost_usd", default=0),
    )
    return {
        "running_runs": active_count(user_id=user.pk),  # holding a concurrency slot
        "unfinished_runs": totals["active"],  # queued ones too
        "runs_total": totals["runs"],
        "tokens_total": totals["tokens"],
        "cost_usd_total": str(totals["cost"]),
        "runs_last_30_days": totals["runs_30d"],
        "tokens_last_30_days": totals["tokens_30d"],
        "cost_usd_last_30_days": str(totals["cost_30d"]),
    }


def _limit(limit) -> dict:
    value = limit.value
    return {"value": str(value) if isinstance(value, Decimal) else value, "source": limit.source}


def _per_run(effective) -> dict:
    per_run = {config: _limit(effective.get(policy)) for policy, config in MAXIMA.items()}
    for name in ("max_turns", "log_limit_mb"):
        per_run[name] = {"value": limits.maximum(name), "source": "instance limit"}
    return per_run


def team_limits_of(user) -> list[dict]:
    """Per team the caller belongs to: what binds a run they launch in one of its projects
    (``effective_limits`` for the pair, as the launch checks it) and the team's shared
    concurrency and monthly budgets with what the team used this month."""
    out = []
    for team, role, _members in list_teams_for_user(user=user):
        effective = effective_limits(user_id=user.pk, team_id=team.pk)
        spend = month_spend(team_id=team.pk)
        out.append(
            {
                "team": team.pk,
                "name": team.name,
                "role": role,
                "per_run": _per_run(effective),
                "allowed": {name: _limit(effective.get(name)) for name in LISTS},
                "concurrent_runs": {
                    **_limit(effective.team_concurrency),
                    "running": active_count(team_id=team.pk),
                },
                "monthly_tokens": {**_limit(effective.team_tokens), "used": spend.tokens},
                "monthly_cost_usd": {
                    **_limit(effective.team_cost),
                    "used": _decimal_text(spend.cost),
                },
            }
        )
    return out


def limits_of(user) -> dict:
    """The caller's own limits (user row, else instance default), and under ``teams`` those of
    each team they belong to: a team project's runs are bound by both."""
    mine = effective_limits(user_id=user.pk, team_id=None)
    spend = month_spend(user_id=user.pk)
    return {
        "per_run": _per_run(mine),
        "allowed": {name: _limit(mine.get(name)) for name in LISTS},
        "concurrent_runs": _limit(mine.user_concurrency),
        "monthly_tokens": {**_limit(mine.user_tokens), "used": spend.tokens},
        "monthly_cost_usd": {**_limit(mine.user_cost), "used": _decimal_text(spend.cost)},
        "teams": team_limits_of(user),
    }


@router.get(
    "/me",
    auth=token_auth(),
    response={200: UsageOut, **errors(401, 403, 429)},
    summary="The caller: token, rate limit, usage and limits (any scope)",
)
def me(request: HttpRequest) -> dict:
    token = request.auth
    rate = peek(token_id=token.pk)
    return {
        "user": request.user.get_username(),
        "token": {
            "name": token.name,
            "prefix": token.prefix,
            "scopes": token.scopes,
            "expires_at": token.expires_at,
        },
        "rate_limit": {
            "requests": settings.API_RATE_LIMIT_REQUESTS,
            "window_seconds": settings.API_RATE_LIMIT_WINDOW_SECONDS,
            "remaining": rate.remaining if rate else None,
        },
        "usage": usage_of(request.user),
        "limits": limits_of(request.user),
    }
