from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import QuerySet

from .models import AuditEvent


@dataclass
class AuditFilters:
    action: str = ""
    actor: str = ""
    target_type: str = ""
    target_id: str = ""
    team: int | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None


def list_audit_events(*, filters: AuditFilters) -> QuerySet[AuditEvent]:
    """The log, newest first. Instance admins only (the view checks)."""
    events = AuditEvent.objects.all()
    if filters.action:
        events = events.filter(action=filters.action)
    if filters.actor:
        events = events.filter(actor_name__iexact=filters.actor)
    if filters.target_type:
        events = events.filter(target_type=filters.target_type)
    if filters.target_id:
        events = events.filter(target_id=filters.target_id)
    if filters.team is not None:
        events = events.filter(team_id=filters.team)
    if filters.date_from:
        events = events.filter(at__date__gte=filters.date_from)
    if filters.date_to:
        events = events.filter(at__date__lte=filters.date_to)
    return events.order_by("-at", "-pk")
