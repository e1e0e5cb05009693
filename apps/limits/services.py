"""Limits at work: editing them (audited), checking a launch, admitting a queued run.

Launch (web): requested values above a limit are refused with an error naming the limit; the
project's own defaults above a limit are clamped down (with a note on the run); a spent monthly
budget refuses the launch; the remaining budget becomes the run's own token/cost stop.

Admission (worker, in ``claim_run``): under a row lock per team and per user, a queued run starts
only if both scopes have a free slot *after* the older runs waiting in that scope (FIFO per team
and per user, so nobody starves). Otherwise it stays ``queued`` with the reason ("team limit
3/3 running"). The limits are re-checked against today's rows here; a run whose image or
network mode is no longer allowed, or whose budget is spent, ends instead of starting. When a
run finishes, :func:`release_slot` enqueues the next waiting runs of its team and user.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q

from apps.audit.services import Action, record

from .models import LimitPolicy, ScopeLock
from .selectors import (
    ACTIVE_STATES,
    LABELS,
    LISTS,
    MAXIMA,
    EffectiveLimits,
    Limit,
    active_count,
    effective_limits,
    month_spend,
)

log = logging.getLogger(__name__)
POLICY_FIELDS = (
    "max_concurrent_runs",
    *MAXIMA,
    *LISTS,
    "monthly_token_budget",
    "monthly_cost_budget_usd",
)
NOUNS = {
    "max_memory_mb": "Memory",
    "max_cpu_cores": "CPU",
    "max_disk_mb": "Disk",
    "max_timeout_seconds": "Wall-clock timeout",
}
UNITS = {
    "max_memory_mb": " MB",
    "max_disk_mb": " MB",
    "max_timeout_seconds": " s",
    "max_cpu_cores": " cores",
}


# -- editing ------------------------------------------------------------------------------------


def _snapshot(policy: LimitPolicy) -> dict[str, Any]:
    return {name: getattr(policy, name) for name in POLICY_FIELDS}


@transaction.atomic
def save_policy(
    *,
    actor: Any,
    scope: str,
    values: Mapping[str, Any],
    team: Any = None,
    user: Any = None,
) -> LimitPolicy:
    """Create or update the row for ``scope`` (and its team/user); audited with before/after.
    Staff only: the view checks."""
    lookup: dict[str, Any] = {"scope": scope}
    if scope == LimitPolicy.Scope.TEAM:
        lookup["team"] = team
    elif scope == LimitPolicy.Scope.USER:
        lookup["user"] = user
    policy = LimitPolicy.objects.select_for_update().filter(**lookup).first()
    before = _snapshot(policy) if policy else None
    policy = policy or LimitPolicy(**lookup)
    for name in POLICY_FIELDS:
        if name in values:
            setattr(policy, name, values[name])
    policy.updated_by = actor
    policy.full_clean()
    policy.save()
    after = _snapshot(policy)
    if before != after:
        record(
            actor=actor,
            action=Action.LIMIT_CHANGE,
            target=policy,
            target_repr=str(policy),
            team_id=policy.team_id,
            before=before,
            after=after,
        )
    team_id, user_id = policy.team_id, policy.user_id
    # A raised limit may let waiting runs start now.
    transaction.on_commit(lambda: wake_waiting(team_id=team_id, user_id=user_id))
    return policy


@transaction.atomic
def delete_policy(*, actor: Any, policy: LimitPolicy) -> None:
    """Drop an override (the instance default row cannot be dropped, only emptied)."""
    if policy.scope == LimitPolicy.Scope.INSTANCE:
        raise ValidationError("The instance default cannot be removed; clear its fields instead.")
    record(
        actor=actor,
        action=Action.LIMIT_CHANGE,
        target=policy,
        target_repr=str(policy),
        team_id=policy.team_id,
        before=_snapshot(policy),
        after=None,
    )
    team_id, user_id = policy.team_id, policy.user_id
    transaction.on_commit(lambda: wake_waiting(team_id=team_id, user_id=user_id))
    policy.delete()


# -- launch --------------------------------------------------------------------------------------


def _fmt(name: str, value: Any) -> str:
    return f"{value:g}{UNITS.get(name, '')}" if isinstance(value, int | float) else str(value)


def image_allowed(image: str, patterns: list[str] | None) -> bool:
    return patterns is None or any(fnmatch.fnmatchcase(image, p) for p in patterns)


def check_values(
    *, limits: EffectiveLimits, config: dict[str, Any], requested: Mapping[str, Any], strict: bool
) -> tuple[dict[str, Any], list[str], dict[str, list[str]]]:
    """Clamp ``config`` to ``limits``. Values the user asked for explicitly (``requested``) above a
    limit are errors when ``strict``; everything else above a limit is clamped with a note."""
    config = dict(config)
    notes: list[str] = []
    errors: dict[str, list[str]] = {}
    for name, key in MAXIMA.items():
        limit = limits.get(name)
        value = config.get(key)
        if limit.value is None or value is None or value <= limit.value:
            continue
        if strict and key in requested:
            errors.setdefault(key, []).append(
                f"{NOUNS[name]} {_fmt(name, value)} is above the "
                f"{limit.source} of {_fmt(name, limit.value)}."
            )
        else:
            config[key] = type(value)(limit.value)
            notes.append(
                f"{key.replace('_', ' ')} {value} clamped to {limit.value} ({limit.source})"
            )
    checks = (
        ("allowed_network_modes", "network_mode", lambda v, allowed: v in allowed),
        ("allowed_images", "image", lambda v, allowed: image_allowed(v, allowed)),
        ("allowed_providers", "provider", lambda v, allowed: v in allowed),
    )
    for name, key, ok in checks:
        limit = limits.get(name)
        value = config.get(key) or ""
        if limit.value is not None and not ok(value, limit.value):
            allowed = ", ".join(limit.value) or "none"
            errors.setdefault(key, []).append(
                f"{key.replace('_', ' ').capitalize()} {value} is not allowed by the "
                f"{limit.source} (allowed {LABELS[name]}: {allowed})."
            )
    return config, notes, errors


@dataclass
class BudgetState:
    exhausted: str = ""  # the message naming the spent budget, or ""
    reserved: str = ""  # what is left is promised to running runs: wait, do not fail
    tokens_left: int | None = None
    cost_left: float | None = None


def _reserved(who: dict[str, Any]) -> tuple[int, Decimal]:
    """What the scope's running runs may still spend: their own stop minus what they used."""
    from apps.runs.models import Run

    scope = Q(project__team_id=who["team_id"]) if "team_id" in who else Q(user_id=who["user_id"])
    tokens, cost = 0, Decimal(0)
    rows = Run.objects.filter(scope, status__in=ACTIVE_STATES).values_list(
        "config", "total_tokens", "cost_usd"
    )
    for config, used_tokens, used_cost in rows:
        if config.get("max_tokens_total"):
            tokens += max(0, int(config["max_tokens_total"]) - int(used_tokens or 0))
        if config.get("max_cost_usd"):
            cost += max(Decimal(0), Decimal(str(config["max_cost_usd"])) - Decimal(used_cost or 0))
    return tokens, cost


def budget_state(
    *, limits: EffectiveLimits, user_id: int | None, team_id: int | None, reserve: bool = False
) -> BudgetState:
    """The monthly budgets left for a new run of (user, team). With ``reserve`` (admission, under
    the scope locks) what running runs may still spend is set aside, so concurrent runs cannot
    together overshoot a budget; a run that finds it all promised waits instead of failing."""
    state = BudgetState()
    scopes: list[tuple[str, Limit, Limit, dict[str, Any]]] = [
        ("your monthly", limits.user_tokens, limits.user_cost, {"user_id": user_id}),
    ]
    if team_id is not None:
        scopes.append(
            ("the team's monthly", limits.team_tokens, limits.team_cost, {"team_id": team_id})
        )
    for words, tokens, cost, who in scopes:
        if not tokens and not cost:
            continue
        spend = month_spend(**who)
        held_tokens, held_cost = _reserved(who) if reserve else (0, Decimal(0))
        if tokens:
            left = int(tokens.value) - spend.tokens
            if left <= 0 and not state.exhausted:
                state.exhausted = (
                    f"{words.capitalize()} token budget is used up "
                    f"({spend.tokens} of {tokens.value} tokens, {tokens.source})."
                )
            elif left - held_tokens <= 0 and not state.reserved:
                state.reserved = (
                    f"{words} token budget: the {left} tokens left are reserved by running runs"
                )
            left -= held_tokens
            state.tokens_left = left if state.tokens_left is None else min(state.tokens_left, left)
        if cost:
            left_cost = Decimal(cost.value) - spend.cost
            if left_cost <= 0 and not state.exhausted:
                state.exhausted = (
                    f"{words.capitalize()} cost budget is used up "
                    f"(${spend.cost:.2f} of ${cost.value}, {cost.source})."
                )
            elif left_cost - held_cost <= 0 and not state.reserved:
                state.reserved = (
                    f"{words} cost budget: the ${left_cost:.2f} left is reserved by running runs"
                )
            value = float(left_cost - held_cost)
            state.cost_left = value if state.cost_left is None else min(state.cost_left, value)
    return state


def _apply_budget(config: dict[str, Any], budget: BudgetState) -> dict[str, Any]:
    config = dict(config)
    if budget.tokens_left is not None:
        own = config.get("max_tokens_total")
        config["max_tokens_total"] = max(
            1, min(own, budget.tokens_left) if own else budget.tokens_left
        )
    if budget.cost_left is not None:
        own = config.get("max_cost_usd")
        left = max(0.01, round(budget.cost_left, 2))
        config["max_cost_usd"] = min(own, left) if own else left
    return config


def apply_launch_limits(
    *, user: Any, project: Any, config: dict[str, Any], requested: Mapping[str, Any]
) -> dict[str, Any]:
    """The run's config within the user's and team's limits, or ValidationError naming the limit
    (field errors for the launch form)."""
    limits = effective_limits(user_id=user.pk, team_id=project.team_id)
    config, notes, errors = check_values(
        limits=limits, config=config, requested=requested, strict=True
    )
    if errors:
        raise ValidationError(errors)
    budget = budget_state(limits=limits, user_id=user.pk, team_id=project.team_id)
    if budget.exhausted:
        raise ValidationError(budget.exhausted)
    config = _apply_budget(config, budget)
    config["clamp_notes"] = list(config.get("clamp_notes") or []) + notes
    return config


# -- admission (worker) --------------------------------------------------------------------------


@dataclass
class Admission:
    start: bool
    reason: str = ""  # why it waits ("team limit 3/3 running")
    refuse: str = ""  # why it cannot start at all
    refuse_reason: str = ""  # end_reason when refused
    config: dict[str, Any] = field(default_factory=dict)


def _lock(keys: list[str]) -> None:
    # Sorted, so two admissions locking the same pair cannot deadlock.
    for key in sorted(keys):
        ScopeLock.objects.get_or_create(key=key)
    list(ScopeLock.objects.select_for_update().filter(key__in=keys).order_by("key"))


def _has_slot(user_id: int | None, team_id: int | None, other: str, cache: dict) -> bool:
    """Whether a run of (user, team) is free to start as far as its ``other`` scope ("user" or
    "team") is concerned."""
    key = (user_id, team_id, other)
    if key not in cache:
        limits = effective_limits(user_id=user_id, team_id=team_id)
        if other == "user":
            limit = limits.user_concurrency
            cache[key] = not limit or active_count(user_id=user_id) < limit.value
        else:
            limit = limits.team_concurrency
            cache[key] = not team_id or not limit or active_count(team_id=team_id) < limit.value
    return cache[key]


def _ahead(run: Any, scope: Q, other: str, cache: dict) -> int:
    """Older queued runs in ``scope`` go first (FIFO), unless their ``other`` scope blocks them:
    a run waiting for its user's slot does not hold the rest of the team back."""
    from apps.runs.models import Run

    older = (
        Run.objects.filter(scope, status=Run.Status.QUEUED)
        .filter(Q(created_at__lt=run.created_at) | Q(created_at=run.created_at, pk__lt=run.pk))
        .values_list("user_id", "project__team_id")
    )
    return sum(1 for user_id, team_id in older if _has_slot(user_id, team_id, other, cache))


def _wait_reason(scope: str, active: int, limit: int, ahead: int) -> str:
    if active >= limit:
        return f"{scope} limit {active}/{limit} running" + (f" · {ahead} ahead" if ahead else "")
    return f"{ahead} older run(s) go first ({scope} limit {active}/{limit} running)"


def admit(*, run: Any) -> Admission:
    """Decide, under the scope locks, whether queued ``run`` starts now. Call inside the
    transaction that moves it to ``provisioning`` (``claim_run`` does)."""
    team_id = run.project.team_id
    user_id = run.user_id
    keys = [f"user:{user_id}"] + ([f"team:{team_id}"] if team_id else [])
    _lock(keys)
    limits = effective_limits(user_id=user_id, team_id=team_id)
    cache: dict = {}
    scopes = []
    if team_id and limits.team_concurrency:
        scopes.append(
            (
                "team",
                limits.team_concurrency.value,
                Q(project__team_id=team_id),
                "user",
                active_count(team_id=team_id),
            )
        )
    if limits.user_concurrency:
        scopes.append(
            (
                "user",
                limits.user_concurrency.value,
                Q(user_id=user_id),
                "team",
                active_count(user_id=user_id),
            )
        )
    for name, limit, scope, other, active in scopes:
        ahead = _ahead(run, scope, other, cache)
        if active + ahead >= limit:
            return Admission(False, reason=_wait_reason(name, active, limit, ahead))
    config, notes, errors = check_values(
        limits=limits, config=dict(run.config), requested={}, strict=False
    )
    if errors:
        message = " ".join(m for ms in errors.values() for m in ms)
        return Admission(
            False, refuse=f"Limits changed since launch: {message}", refuse_reason="limit"
        )
    budget = budget_state(limits=limits, user_id=user_id, team_id=team_id, reserve=True)
    if budget.exhausted:
        return Admission(False, refuse=budget.exhausted, refuse_reason="budget")
    if budget.reserved:
        return Admission(False, reason=budget.reserved[0].upper() + budget.reserved[1:])
    config = _apply_budget(config, budget)
    config["clamp_notes"] = list(config.get("clamp_notes") or []) + notes
    return Admission(True, config=config)


def release_slot(*, user_id: int | None, team_id: int | None) -> list[int]:
    """A run of (user, team) ended: enqueue the oldest runs waiting in its scopes (as many as
    there are free slots, at least one). Duplicate deliveries are harmless: admission decides."""
    from apps.runs.models import Run
    from apps.runs.services import enqueue_run

    scopes = [Q(user_id=user_id)] + ([Q(project__team_id=team_id)] if team_id else [])
    limits = effective_limits(user_id=user_id, team_id=team_id)
    free = [
        (limits.user_concurrency.value or 10) - active_count(user_id=user_id),
        (limits.team_concurrency.value or 10) - active_count(team_id=team_id) if team_id else 10,
    ]
    count = max(1, min(free))
    ids: list[int] = []
    for scope in scopes:
        for run_id in (
            Run.objects.filter(scope, status=Run.Status.QUEUED)
            .order_by("created_at", "pk")
            .values_list("pk", flat=True)[:count]
        ):
            if run_id not in ids:
                ids.append(run_id)
    for run_id in ids:
        try:
            enqueue_run(run_id)
        except Exception as exc:  # the broker is down: the sweeper re-enqueues queued runs
            log.warning("could not enqueue waiting run %s: %s", run_id, exc)
    return ids


def ceiling_rows() -> list[tuple[str, Any]]:
    """The hardware ceiling (settings.RUN_LIMITS) that no row can raise."""
    from django.conf import settings

    # In the limits table's column order: memory, CPU, disk, wall-clock.
    order = ("max_memory_mb", "max_cpu_cores", "max_disk_mb", "max_timeout_seconds")
    return [(LABELS[name], settings.RUN_LIMITS[MAXIMA[name]]) for name in order]


def wake_waiting(*, team_id: int | None = None, user_id: int | None = None) -> list[int]:
    """Enqueue queued runs of the scope whose limits changed (all queued runs for the instance
    row), oldest first; admission decides which of them actually start."""
    from apps.runs.models import Run
    from apps.runs.services import enqueue_run

    runs = Run.objects.filter(status=Run.Status.QUEUED)
    if team_id is not None:
        runs = runs.filter(project__team_id=team_id)
    elif user_id is not None:
        runs = runs.filter(user_id=user_id)
    ids = list(runs.order_by("created_at", "pk").values_list("pk", flat=True)[:200])
    for run_id in ids:
        try:
            enqueue_run(run_id)
        except Exception as exc:  # the broker is down: the sweeper re-enqueues queued runs
            log.warning("could not enqueue waiting run %s: %s", run_id, exc)
    return ids
