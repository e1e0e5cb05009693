"""Reads of runs. ``runs_visible_to`` is the one access rule for runs (it follows projects)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Min, Q, QuerySet
from django.http import Http404
from django.utils import timezone

from apps.projects.selectors import projects_visible_to

from . import ansi
from .models import Artifact, Run, RunEvent
from .recorder import MAX_LINES_PER_EVENT

User = AbstractBaseUser | AnonymousUser
TAIL_LINES = 1000
PAGE_LINES = 2000
NON_TIMELINE_TYPES = ("log", "stats", "files")


def runs_visible_to(user: User) -> QuerySet[Run]:
    return Run.objects.filter(project__in=projects_visible_to(user))


def get_run_for_user(*, user: User, run_id: int | str) -> Run:
    """The run with its project, or Http404 for anyone who may not see it."""
    try:
        return runs_visible_to(user).select_related("project", "user").get(pk=int(run_id))
    except (Run.DoesNotExist, ValueError, TypeError):
        raise Http404("No such run") from None


def can_view_run(*, user: User, run_id: int) -> bool:
    return runs_visible_to(user).filter(pk=run_id).exists()


def get_artifact_for_user(*, user: User, run_id: int | str, artifact_id: int | str) -> Artifact:
    run = get_run_for_user(user=user, run_id=run_id)
    try:
        return run.artifacts.get(pk=int(artifact_id))
    except (Artifact.DoesNotExist, ValueError, TypeError):
        raise Http404("No such artifact") from None


def queue_position(*, run: Run) -> int:
    """1 = next to start."""
    return Run.objects.filter(status=Run.Status.QUEUED, created_at__lt=run.created_at).count() + 1


# -- the event stream ----------------------------------------------------------------------------


def event_payload(
    seq: int, kind: str, ts: dt.datetime, data: dict, text: str, line_start: int | None
) -> dict[str, Any]:
    """What browsers receive for one event (over the socket or embedded in the page)."""
    if line_start is not None:
        data = {**data, "line": line_start, "text": text}
    return {"seq": seq, "type": kind, "ts": round(ts.timestamp(), 3), "data": data}


def events_after(
    *, run_id: int, after: int, limit: int = 500, max_bytes: int = 1024 * 1024
) -> list[dict[str, Any]]:
    """The next page of events with ``seq > after``, in order (at most ``limit`` events, and
    stopping once ``max_bytes`` of log text are in the page)."""
    payloads: list[dict[str, Any]] = []
    size = 0
    rows = (
        RunEvent.objects.filter(run_id=run_id, seq__gt=after)
        .order_by("seq")
        .values_list("seq", "type", "ts", "data", "text", "line_start")[:limit]
    )
    for row in rows:
        payloads.append(event_payload(*row))
        size += len(row[4]) + 200
        if size >= max_bytes:
            break
    return payloads


def run_state(*, run_id: int) -> tuple[str, int] | None:
    return Run.objects.filter(pk=run_id).values_list("status", "last_seq").first()


# -- the log --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogLine:
    number: int
    text: str
    stream: str
    ts: dt.datetime

    @property
    def html(self) -> str:
        return ansi.to_html(self.text)

    @property
    def plain(self) -> str:
        return ansi.plain(self.text)


def _lines_of(rows: Any, first: int, last: int) -> list[LogLine]:
    lines: list[LogLine] = []
    for line_start, text, ts, data in rows:
        stream = data.get("stream", "stdout")
        for offset, line in enumerate(text.split("\n")):
            number = line_start + offset
            if first <= number <= last:
                lines.append(LogLine(number=number, text=line, stream=stream, ts=ts))
    return lines


def log_lines(*, run: Run, first: int, last: int) -> list[LogLine]:
    """Lines ``first``..``last`` (1-based, inclusive) of the run's log."""
    first = max(1, first)
    if last < first:
        return []
    rows = (
        RunEvent.objects.filter(
            run_id=run.pk,
            line_start__isnull=False,
            line_start__gt=first - MAX_LINES_PER_EVENT,
            line_start__lte=last,
        )
        .order_by("line_start")
        .values_list("line_start", "text", "ts", "data")
    )
    return _lines_of(rows, first, last)


def log_tail(*, run: Run, count: int = TAIL_LINES) -> list[LogLine]:
    last = run.log_lines
    return log_lines(run=run, first=last - count + 1, last=last)


@dataclass
class SearchResult:
    query: str
    matches: list[LogLine] = field(default_factory=list)
    total: int = 0
    limit: int = 0

    @property
    def truncated(self) -> bool:
        return self.total > len(self.matches)


def search_log(*, run: Run, query: str, limit: int = 500) -> SearchResult:
    """Case-insensitive substring search over the whole log (colours ignored).

    The database narrows the events down (``icontains`` on their text); lines are matched here.
    """
    result = SearchResult(query=query, limit=limit)
    needle = query.casefold()
    if not needle:
        return result
    rows = (
        RunEvent.objects.filter(run_id=run.pk, type="log", text__icontains=query)
        .order_by("seq")
        .values_list("line_start", "text", "ts", "data")
        .iterator(chunk_size=200)
    )
    for line_start, text, ts, data in rows:
        for offset, line in enumerate(text.split("\n")):
            if needle in line.casefold() and needle in ansi.plain(line).casefold():
                result.total += 1
                if len(result.matches) < limit:
                    result.matches.append(
                        LogLine(
                            number=line_start + offset,
                            text=line,
                            stream=data.get("stream", "stdout"),
                            ts=ts,
                        )
                    )
    return result


def iter_raw_log(*, run: Run) -> Iterator[str]:
    """The whole log as written (colour codes included), for download."""
    rows = (
        RunEvent.objects.filter(run_id=run.pk, type="log")
        .order_by("seq")
        .values_list("text", flat=True)
        .iterator(chunk_size=100)
    )
    for text in rows:
        yield text + "\n"


# -- the rest of the page ------------------------------------------------------------------------


def log_anchors(*, run: Run) -> list[dict[str, Any]]:
    """The first log line of each command / tool call, so the timeline can link to it."""
    rows = (
        RunEvent.objects.filter(run_id=run.pk, type="log")
        .values("data__command_index", "data__tool_use_id")
        .annotate(first=Min("line_start"))
        .order_by("first")
    )
    return [
        {
            "command_index": row["data__command_index"],
            "tool_use_id": row["data__tool_use_id"],
            "line": row["first"],
        }
        for row in rows
    ]


def timeline_events(*, run: Run) -> list[dict[str, Any]]:
    rows = (
        RunEvent.objects.filter(run_id=run.pk)
        .exclude(type__in=NON_TIMELINE_TYPES)
        .order_by("seq")
        .values_list("seq", "type", "ts", "data", "text", "line_start")
    )
    return [event_payload(*row) for row in rows]


def stats_samples(*, run: Run, max_points: int = 900) -> list[dict[str, Any]]:
    rows = list(
        RunEvent.objects.filter(run_id=run.pk, type="stats")
        .order_by("seq")
        .values_list("seq", "ts", "data")
    )
    if len(rows) > max_points:
        step = len(rows) / max_points
        rows = [rows[int(i * step)] for i in range(max_points - 1)] + [rows[-1]]
    return [{"seq": seq, "ts": round(ts.timestamp(), 3), **data} for seq, ts, data in rows]


def latest_file_listing(*, run: Run) -> dict[str, Any] | None:
    row = (
        RunEvent.objects.filter(run_id=run.pk, type="files")
        .order_by("-seq")
        .values_list("seq", "data")
        .first()
    )
    if row is None:
        return None
    return {"seq": row[0], **row[1]}


def artifacts_of(*, run: Run) -> QuerySet[Artifact]:
    return run.artifacts.defer("content").order_by("path")


# -- history --------------------------------------------------------------------------------------

SORTS = {
    "created": "created_at",
    "duration": "duration_ms",
    "cost": "cost_usd",
    "tokens": "total_tokens",
}


@dataclass
class HistoryFilters:
    project: int | None = None
    status: list[str] = field(default_factory=list)
    user: str = ""
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    min_duration: float | None = None  # seconds
    max_duration: float | None = None
    min_cost: Decimal | None = None
    max_cost: Decimal | None = None
    sort: str = "created"
    descending: bool = True
    # Review filters (apps/reviews/selectors.py: filter_by_review): verdict, label, reviewer,
    # has_comments.
    review: dict[str, str] = field(default_factory=dict)


@dataclass
class HistoryPage:
    runs: list[Run]
    next_cursor: str | None
    prev_cursor: str | None


def keyset_page(
    rows: list, *, limit: int, backwards: bool, had_cursor: bool, key: Any
) -> tuple[list, str | None, str | None]:
    """Trim a keyset page fetched with ``limit + 1`` rows (walking backwards: fetched in the
    opposite order) to ``limit`` in display order, with the cursors of the pages around it.
    ``key(row)`` is the (sort value, pk) pair a cursor holds."""
    more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
    next_cursor = prev_cursor = None
    if rows:
        if more or backwards:
            next_cursor = encode_cursor(*key(rows[-1]))
        if (backwards and more) or (not backwards and had_cursor):
            prev_cursor = encode_cursor(*key(rows[0]))
    return rows, next_cursor, prev_cursor


def encode_cursor(value: Any, pk: int) -> str:
    if isinstance(value, dt.datetime):
        value = value.isoformat()
    elif isinstance(value, Decimal):
        value = str(value)
    raw = json.dumps([value, pk]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[Any, int] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value, pk = json.loads(raw)
        pk = int(pk)
        if sort == "created":
            value = dt.datetime.fromisoformat(value)
        elif sort == "cost":
            value = Decimal(str(value))
        else:
            value = int(value)
    except (ValueError, TypeError, binascii.Error, InvalidOperation, json.JSONDecodeError):
        return None
    return value, pk


def filter_runs(queryset: QuerySet[Run], filters: HistoryFilters) -> QuerySet[Run]:
    if filters.project:
        queryset = queryset.filter(project_id=filters.project)
    if filters.status:
        queryset = queryset.filter(status__in=filters.status)
    if filters.user:
        queryset = queryset.filter(user__username=filters.user)
    # Whole days in the server's time zone, as a range on the column (an index can serve it).
    if filters.date_from:
        start = dt.datetime.combine(filters.date_from, dt.time.min)
        queryset = queryset.filter(created_at__gte=timezone.make_aware(start))
    if filters.date_to:
        end = dt.datetime.combine(filters.date_to + dt.timedelta(days=1), dt.time.min)
        queryset = queryset.filter(created_at__lt=timezone.make_aware(end))
    if filters.min_duration is not None:
        queryset = queryset.filter(duration_ms__gte=int(filters.min_duration * 1000))
    if filters.max_duration is not None:
        queryset = queryset.filter(duration_ms__lte=int(filters.max_duration * 1000))
    if filters.min_cost is not None:
        queryset = queryset.filter(cost_usd__gte=filters.min_cost)
    if filters.max_cost is not None:
        queryset = queryset.filter(cost_usd__lte=filters.max_cost)
    if filters.review:
        from apps.reviews.selectors import filter_by_review

        queryset = filter_by_review(queryset, filters.review)
    return queryset


def list_runs_for_user(
    *,
    user: User,
    filters: HistoryFilters,
    after: str | None = None,
    before: str | None = None,
    limit: int = 50,
) -> HistoryPage:
    """One page of the run history, newest (or per ``filters.sort``) first.

    Keyset pagination on ``(sort field, id)``: a page costs the same at row 100,000 as at row 1
    and stays stable while new runs arrive. Two queries whatever the page: the ids, then the
    rows with their project, launcher and review.
    """
    field_name = SORTS.get(filters.sort, "created_at")
    sort = filters.sort if filters.sort in SORTS else "created"
    queryset = filter_runs(runs_visible_to(user), filters)
    descending = filters.descending
    cursor = (
        decode_cursor(before, sort) if before else decode_cursor(after, sort) if after else None
    )
    backwards = bool(before and cursor)
    # Walking backwards is walking forwards in the opposite order, then flipping the page.
    forward_desc = descending != backwards
    if cursor is not None:
        value, pk = cursor
        if forward_desc:
            queryset = queryset.filter(
                Q(**{f"{field_name}__lt": value}) | Q(**{field_name: value, "pk__lt": pk})
            )
        else:
            queryset = queryset.filter(
                Q(**{f"{field_name}__gt": value}) | Q(**{field_name: value, "pk__gt": pk})
            )
    order = [f"-{field_name}", "-pk"] if forward_desc else [field_name, "pk"]
    # Two steps: the page's ids from a join-free query the planner serves from the sort index,
    # then those rows with what the table shows. One query with the joins lets SQLite sort
    # every run of the user instead (100 ms at 100k runs).
    ids = list(queryset.order_by(*order).values_list("pk", flat=True)[: limit + 1])
    by_id = {
        run.pk: run
        for run in Run.objects.filter(pk__in=ids)
        .select_related("project", "user", "review__reviewer")
        .defer("config", "overrides", "commands", "error_message")
    }
    rows, next_cursor, prev_cursor = keyset_page(
        [by_id[pk] for pk in ids if pk in by_id],
        limit=limit,
        backwards=backwards,
        had_cursor=cursor is not None,
        key=lambda run: (getattr(run, field_name), run.pk),
    )
    return HistoryPage(runs=rows, next_cursor=next_cursor, prev_cursor=prev_cursor)


def recent_runs_for_user(*, user: User, limit: int = 8) -> list[Run]:
    return list(
        runs_visible_to(user)
        .select_related("project", "user")
        .order_by("-created_at", "-pk")[:limit]
    )
