from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet

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


def require_audit_reader(user: Any) -> None:
    """The audit log is for instance admins only (the page, its export and the API)."""
    if not (user.is_authenticated and user.is_staff):
        raise PermissionDenied("Only instance admins read the audit log.")


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


@dataclass
class AuditPage:
    events: list[AuditEvent]
    next_cursor: str | None
    prev_cursor: str | None


def audit_page(
    *, filters: AuditFilters, after: str | None = None, before: str | None = None, limit: int = 50
) -> AuditPage:
    """One page of the log, newest first, by keyset on (at, id) like the run history: a cursor
    stays valid while new entries arrive. ``after``/``before`` are cursors from
    :func:`decode_audit_cursor`-compatible pages; an invalid one raises ValueError."""
    from apps.runs.selectors import keyset_page

    events = list_audit_events(filters=filters)
    cursor = decode_audit_cursor(before or after) if (before or after) else None
    backwards = bool(before)
    if cursor is not None:
        at, pk = cursor
        if backwards:
            events = events.filter(Q(at__gt=at) | Q(at=at, pk__gt=pk)).order_by("at", "pk")
        else:
            events = events.filter(Q(at__lt=at) | Q(at=at, pk__lt=pk))
    rows, next_cursor, prev_cursor = keyset_page(
        list(events[: limit + 1]),
        limit=limit,
        backwards=backwards,
        had_cursor=cursor is not None,
        key=lambda event: (event.at, event.pk),
    )
    return AuditPage(events=rows, next_cursor=next_cursor, prev_cursor=prev_cursor)


def decode_audit_cursor(cursor: str) -> tuple[dt.datetime, int]:
    """(at, id) of a page edge; ValueError for anything a page did not hand out."""
    from apps.runs.selectors import decode_cursor

    decoded = decode_cursor(cursor, "created")
    if decoded is None:
        raise ValueError("not a cursor")
    at, pk = decoded
    if at.tzinfo is None or not 0 < pk < 2**63:
        raise ValueError("not a cursor")
    return at, pk


# The CSV export's columns (the page's download and the API's export.csv).
CSV_HEADER = [
    "at",
    "actor",
    "action",
    "target_type",
    "target_id",
    "target",
    "team_id",
    "ip",
    "user_agent",
    "before",
    "after",
]


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv_safe(value: str) -> str:
    # Cells starting with = + - @ run as formulas in spreadsheets: quote them.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _json_cell(value: Any) -> str:
    return _csv_safe(json.dumps(value, sort_keys=True)) if value is not None else ""


def csv_row(event: AuditEvent) -> list[Any]:
    return [
        event.at.isoformat(),
        _csv_safe(event.actor_name),
        event.action,
        event.target_type,
        _csv_safe(event.target_id),
        _csv_safe(event.target_repr),
        event.team_id or "",
        event.ip or "",
        _csv_safe(event.user_agent),
        _json_cell(event.before),
        _json_cell(event.after),
    ]


def csv_lines(*, filters: AuditFilters) -> Iterator[str]:
    """The export, one CSV line at a time (streamed: the log can be long)."""
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_HEADER)
    for event in list_audit_events(filters=filters).iterator(chunk_size=500):
        yield writer.writerow(csv_row(event))
