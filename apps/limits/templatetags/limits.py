"""``{% launch_limits project %}``: the limits that apply to the signed-in user launching in
``project`` (sizes, allow-lists, running runs and what is left of the monthly budgets)."""

from __future__ import annotations

from typing import Any

from django import template

from ..selectors import MAXIMA, active_count, effective_limits
from ..services import UNITS, budget_state

register = template.Library()


@register.inclusion_tag("limits/_launch_limits.html", takes_context=True)
def launch_limits(context: dict[str, Any], project: Any) -> dict[str, Any]:
    user = context["request"].user
    limits = effective_limits(user_id=user.pk, team_id=project.team_id)
    sizes = []
    for name, key in MAXIMA.items():
        limit = limits.get(name)
        sizes.append((key.replace("_", " "), f"{limit.value:g}{UNITS.get(name, '')}", limit.source))
    lists = []
    for name, label in (
        ("allowed_network_modes", "network"),
        ("allowed_images", "images"),
        ("allowed_providers", "providers"),
    ):
        limit = limits.get(name)
        if limit.value is not None:
            lists.append((label, ", ".join(limit.value) or "none", limit.source))
    slots = []
    if limits.user_concurrency:
        slots.append(("you", active_count(user_id=user.pk), limits.user_concurrency.value))
    if project.team_id and limits.team_concurrency:
        slots.append(("team", active_count(team_id=project.team_id), limits.team_concurrency.value))
    budget = budget_state(limits=limits, user_id=user.pk, team_id=project.team_id)
    return {"sizes": sizes, "lists": lists, "slots": slots, "budget": budget}
