"""The one writer of a run's event log: persist first, then ring the bell.

:func:`append_events` is the only code that assigns ``seq`` numbers. It locks the run row, gives
the events the next gap-free numbers, writes them, advances ``Run.last_seq`` and, after the commit,
notifies the run's group with the highest ``seq``. State transitions (services.transition) and the
worker's :class:`RunRecorder` both go through it, so they can never hand out the same number.

:class:`RunRecorder` sits between the executor and the database in the worker. ``record`` is
cheap and thread-safe: it turns executor events into stored events, assembles log output into
whole lines (numbered from 1 across the run), merges streamed text pieces, and buffers. A flusher
thread writes the buffer every ~100 ms, or sooner when it grows, in one transaction. Memory is
bounded: past ``log_limit_bytes`` log text is counted but not kept (one ``log_truncated`` marker
says so), past ``hard_limit_bytes`` the ``on_limit`` callback asks the caller to kill the run, and
``record`` blocks (back-pressure on the sandbox output stream) while the database lags behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import DatabaseError, close_old_connections, connection, transaction

from .channels import RunNotifier, notify_run
from .exceptions import LeaseLost
from .models import Run, RunEvent

log = logging.getLogger(__name__)

MAX_LINE_CHARS = 16 * 1024  # longer lines are split (a 100 MB line must not live in memory)
MAX_LINES_PER_EVENT = 2000
# A log event's text; even all escape codes (6 JSON bytes each) stay well under the 1 MiB a
# WebSocket message may carry (daphne's limit).
MAX_EVENT_TEXT_BYTES = 128 * 1024
MAX_FIELD_CHARS = 64 * 1024  # any one string in an event's data
MAX_EVENT_JSON = 256 * 1024  # a whole event's data; past it, strings are cut harder
FLUSH_INTERVAL = 0.1
FLUSH_SOON_BYTES = 256 * 1024
MAX_PENDING_BYTES = 8 * 1024 * 1024
PARTIAL_LINE_AFTER = 0.5  # a line without newline is shown after this long (prompts, dots)
# Backoff between attempts to write a batch while the database does not answer; the last delay
# repeats until the recorder's retry budget is spent.
RETRY_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0)
DEFAULT_RETRY_BUDGET = 60.0

# Executor event types renamed for storage: its "status" is a phase of the run, not our state.
RENAMED_TYPES = {"status": "phase"}
LimitCallback = Callable[[str], None]


@dataclass
class NewEvent:
    type: str
    ts: float
    data: dict = field(default_factory=dict)
    text: str = ""
    line_start: int | None = None
    line_count: int = 0


def _timestamp(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


def append_events(
    run_id: int,
    events: list[NewEvent],
    *,
    lease_owner: str | None = None,
    updates: Mapping[str, Any] | None = None,
    notify: Callable[[int, int], None] | None = None,
) -> int:
    """Append ``events`` to the run's log; returns the run's last ``seq``.

    Call inside ``transaction.atomic()``. With ``lease_owner`` the write happens only while that
    worker still holds the run (else :class:`LeaseLost`, nothing written). ``updates`` are run
    fields to set in the same transaction. Watchers are notified after the commit.
    """
    row = (
        Run.objects.select_for_update()
        .filter(pk=run_id)
        .values_list("last_seq", "lease_owner")
        .first()
    )
    if row is None:
        raise Run.DoesNotExist(f"run {run_id} does not exist")
    last_seq, owner = row
    if lease_owner is not None and owner != lease_owner:
        raise LeaseLost(f"run {run_id} is held by {owner or 'nobody'} now, not {lease_owner}")
    if events:
        RunEvent.objects.bulk_create(
            [
                RunEvent(
                    run_id=run_id,
                    seq=last_seq + index,
                    type=event.type,
                    ts=_timestamp(event.ts),
                    data=event.data,
                    text=event.text,
                    line_start=event.line_start,
                    line_count=event.line_count,
                )
                for index, event in enumerate(events, start=1)
            ],
            batch_size=500,
        )
    upto = last_seq + len(events)
    fields = dict(updates or {})
    if events:
        fields["last_seq"] = upto
    if fields:
        Run.objects.filter(pk=run_id).update(**fields)
    if events:
        ring = notify or notify_run
        transaction.on_commit(lambda: ring(run_id, upto))
    return upto


def clean_value(value: Any, limit: int = MAX_FIELD_CHARS) -> Any:
    """JSON data safe for every database: no NUL characters, no unbounded strings."""
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "")
        if len(value) > limit:
            dropped = len(value) - limit
            value = value[:limit] + f"\n[… {dropped} more characters not stored]"
        return value
    if isinstance(value, Mapping):
        return {str(k).replace("\x00", ""): clean_value(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_value(v, limit) for v in value]
    if isinstance(value, Decimal):
        return float(value)
    return value


def _size_hint(data: Mapping[str, Any]) -> int:
    size = 200
    for value in data.values():
        if isinstance(value, str):
            size += len(value)
        elif isinstance(value, Mapping | list):
            size += 2000  # nested: counted roughly; the exact check runs past a threshold
    return size


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "replace"))


class _LogBatch:
    __slots__ = ("first_line", "lines", "nbytes", "source", "stream", "ts")

    def __init__(self, stream: str, source: dict, first_line: int, ts: float) -> None:
        self.stream = stream
        self.source = source
        self.first_line = first_line
        self.lines: list[str] = []
        self.nbytes = 0
        self.ts = ts

    def to_event(self) -> NewEvent:
        return NewEvent(
            type="log",
            ts=self.ts,
            data={"stream": self.stream, **self.source},
            text="\n".join(self.lines),
            line_start=self.first_line,
            line_count=len(self.lines),
        )


class RunRecorder:
    """Buffers a run's events and writes them in order; see the module docstring."""

    def __init__(
        self,
        run: Run,
        *,
        lease_owner: str | None,
        log_limit_bytes: int,
        hard_limit_bytes: int | None = None,
        on_limit: LimitCallback | None = None,
        flush_interval: float = FLUSH_INTERVAL,
        retry_budget: float = DEFAULT_RETRY_BUDGET,
    ) -> None:
        self.run_id = run.pk
        # How long a batch is retried while the database is unreachable before ``on_limit``
        # ("database_unavailable") asks the caller to stop the run. The events stay buffered
        # (in order) and later writes keep trying: nothing is dropped while the worker lives.
        self.retry_budget = retry_budget
        self.lease_owner = lease_owner
        self.log_limit_bytes = log_limit_bytes
        self.hard_limit_bytes = hard_limit_bytes
        self.on_limit = on_limit
        self.flush_interval = flush_interval
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._items: list[NewEvent | _LogBatch] = []
        self._pending_bytes = 0
        self._partial: dict[str, tuple[str, float, dict]] = {}
        # Streams whose unfinished line was shown early (PARTIAL_LINE_AFTER) and whose newline
        # has not come yet, with the source it came from: that newline ends the shown line
        # instead of adding an empty one.
        self._released: dict[str, dict] = {}
        self._next_line = run.log_lines + 1
        self.truncated = run.log_dropped_bytes > 0
        self.totals: dict[str, Any] = {
            "log_lines": run.log_lines,
            "log_bytes": run.log_bytes,
            "log_dropped_bytes": run.log_dropped_bytes,
            "turns": run.turns,
            "peak_memory_mb": run.peak_memory_mb,
        }
        self._written: dict[str, Any] = dict(self.totals)
        self._limit_fired = False
        self.lost = False
        self.closed = False
        self.last_written_seq = run.last_seq
        self.write_errors = 0
        self.unavailable = False  # the retry budget was spent once: the run is being stopped
        self.outage_seconds = 0.0  # the longest time writes waited for the database
        self._failing_since: float | None = None
        self._last_write = 0.0  # time.monotonic() of the last write
        self._notifier = RunNotifier()
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> RunRecorder:
        self._thread = threading.Thread(
            target=self._flush_loop, name=f"run-{self.run_id}-recorder", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Write everything (partial lines included) and stop the flusher. Idempotent."""
        with self._cond:
            if self.closed:
                return
            for stream in list(self._partial):
                self._release_partial(stream)
            self.closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=120)
        # The database may be away: keep trying for one more retry budget before giving up on
        # what is still buffered (then the sweeper ends the run and the log says it crashed).
        deadline = time.monotonic() + self.retry_budget
        while True:
            self.flush()
            with self._cond:
                left = len(self._items)
            if not left or self.lost or time.monotonic() >= deadline:
                break
        if left and not self.lost:
            log.error(
                "run %s: %d events could not be written: the database is away", self.run_id, left
            )
        self._notifier.close()

    def __enter__(self) -> RunRecorder:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- recording (any thread) ---------------------------------------------------------------

    def record(self, event: Any) -> None:
        """Take an executor event (or its ``to_dict()``)."""
        data = event.to_dict() if hasattr(event, "to_dict") else dict(event)
        kind = str(data.pop("type", "event"))
        ts = float(data.pop("ts", None) or time.time())
        if kind == "log":
            source = {
                key: data[key]
                for key in ("tool_use_id", "command_index")
                if data.get(key) is not None
            }
            self.log(str(data.get("stream") or "stdout"), str(data.get("text") or ""), source, ts)
            return
        self.record_event(RENAMED_TYPES.get(kind, kind), data, ts=ts)

    def record_event(self, kind: str, data: Mapping[str, Any], *, ts: float | None = None) -> None:
        data = clean_value(dict(data))
        if _size_hint(data) > MAX_EVENT_JSON // 4 and len(json.dumps(data)) > MAX_EVENT_JSON:
            data = clean_value(data, limit=4096)
        ts = ts or time.time()
        with self._cond:
            if self.lost:
                return
            self._wait_for_room()
            self._track(kind, data)
            last = self._items[-1] if self._items else None
            if (
                kind == "text_delta"
                and isinstance(last, NewEvent)
                and last.type == "text_delta"
                and last.data.get("turn") == data.get("turn")
                and len(last.data.get("text", "")) < MAX_FIELD_CHARS
            ):
                last.data["text"] = last.data.get("text", "") + data.get("text", "")
                self._pending_bytes += len(data.get("text", ""))
                return
            self._items.append(NewEvent(type=kind, ts=ts, data=data))
            self._pending_bytes += _size_hint(data)
            if len(self._items) == 1 or self._pending_bytes >= FLUSH_SOON_BYTES:
                self._cond.notify_all()

    def log(
        self, stream: str, text: str, source: dict | None = None, ts: float | None = None
    ) -> None:
        """Log output as it arrives (any chunking); stored as whole, numbered lines."""
        if not text:
            return
        if "\x00" in text:
            text = text.replace("\x00", "")
        ts = ts or time.time()
        source = source or {}
        fire = False
        with self._cond:
            if self.lost:
                return
            self._wait_for_room()
            was_empty = not self._items
            pending = self._partial.pop(stream, None)
            released_from = self._released.pop(stream, None)
            if released_from == source and pending is None and text.startswith("\n"):
                text = text[1:]
                if not text:
                    return
            since = ts
            if pending is not None:
                if pending[2] != source:  # another command/tool started: the old line is done
                    self._add_lines(stream, pending[2], [pending[0]], pending[1])
                else:
                    text = pending[0] + text
                    since = pending[1]
            lines = text.split("\n")
            rest = lines.pop()
            if len(rest) > MAX_LINE_CHARS:
                while len(rest) > MAX_LINE_CHARS:
                    lines.append(rest[:MAX_LINE_CHARS])
                    rest = rest[MAX_LINE_CHARS:]
            if rest:
                self._partial[stream] = (rest, since, source)
            if lines:
                self._add_lines(stream, source, lines, ts)
            fire = self._over_hard_limit()
            if (was_empty and self._items) or rest or self._pending_bytes >= FLUSH_SOON_BYTES:
                self._cond.notify_all()
        if fire:
            self._fire_limit("output_limit")

    def flush(self) -> int:
        """Write what is buffered now, in the calling thread; returns the last written seq."""
        with self._write_lock:
            self._write_pending()
        return self.last_written_seq

    # -- internals (callers hold self._cond) -------------------------------------------------

    def _wait_for_room(self) -> None:
        while self._pending_bytes > MAX_PENDING_BYTES and not self.lost and self._thread:
            if not self._thread.is_alive():
                break
            self._cond.notify_all()
            self._cond.wait(timeout=0.5)

    def _track(self, kind: str, data: Mapping[str, Any]) -> None:
        totals = self.totals
        if kind == "turn_started":
            totals["turns"] = max(int(totals.get("turns") or 0), int(data.get("turn") or 0))
        elif kind == "usage":
            total = data.get("total") or {}
            for key in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
                totals[key] = int(total.get(key) or 0)
            totals["total_tokens"] = sum(
                totals[k]
                for k in (
                    "input_tokens",
                    "output_tokens",
                    "cache_read_tokens",
                    "cache_write_tokens",
                )
            )
            totals["cost_usd"] = Decimal(str(round(float(total.get("cost_usd") or 0), 6)))
        elif kind == "stats":
            memory = data.get("memory_mb")
            if isinstance(memory, int | float):
                totals["peak_memory_mb"] = max(float(totals.get("peak_memory_mb") or 0), memory)
        elif kind == "command_finished":
            totals["exit_code"] = data.get("exit_code")

    def _add_lines(self, stream: str, source: dict, lines: list[str], ts: float) -> None:
        if any(len(line) > MAX_LINE_CHARS for line in lines):
            split: list[str] = []
            for line in lines:
                while len(line) > MAX_LINE_CHARS:
                    split.append(line[:MAX_LINE_CHARS])
                    line = line[MAX_LINE_CHARS:]
                split.append(line)
            lines = split
        nbytes = _utf8_len("\n".join(lines)) + 1
        totals = self.totals
        if self.truncated:
            totals["log_dropped_bytes"] += nbytes
            return
        room = self.log_limit_bytes - totals["log_bytes"]
        cut = False
        if nbytes > room:
            kept, used = [], 0
            for line in lines:
                size = _utf8_len(line) + 1
                if used + size > room:
                    break
                kept.append(line)
                used += size
            totals["log_dropped_bytes"] += nbytes - used
            lines, nbytes, cut = kept, used, True
        if lines:
            self._append_lines(stream, source, lines, nbytes, ts)
        if cut:
            self.truncated = True
            self._items.append(
                NewEvent(
                    type="log_truncated",
                    ts=ts,
                    data={"limit_bytes": self.log_limit_bytes, "line": self._next_line},
                )
            )

    def _append_lines(
        self, stream: str, source: dict, lines: list[str], nbytes: int, ts: float
    ) -> None:
        totals = self.totals
        totals["log_bytes"] += nbytes
        totals["log_lines"] += len(lines)
        self._pending_bytes += nbytes
        last = self._items[-1] if self._items else None
        index = 0
        while index < len(lines):
            if (
                isinstance(last, _LogBatch)
                and last.stream == stream
                and last.source == source
                and len(last.lines) < MAX_LINES_PER_EVENT
                and last.nbytes < MAX_EVENT_TEXT_BYTES
            ):
                batch = last
            else:
                batch = _LogBatch(stream, source, self._next_line, ts)
                self._items.append(batch)
            take = lines[index : index + MAX_LINES_PER_EVENT - len(batch.lines)]
            batch.lines.extend(take)
            batch.nbytes += nbytes * len(take) // len(lines) + 1
            self._next_line += len(take)
            index += len(take)
            last = None

    def _release_partial(self, stream: str) -> None:
        pending = self._partial.pop(stream, None)
        if pending is not None:
            self._add_lines(stream, pending[2], [pending[0]], pending[1])
            self._released[stream] = pending[2]

    def _over_hard_limit(self) -> bool:
        if self.hard_limit_bytes is None or self._limit_fired:
            return False
        seen = self.totals["log_bytes"] + self.totals["log_dropped_bytes"]
        if seen > self.hard_limit_bytes:
            self._limit_fired = True
            return True
        return False

    def _fire_limit(self, reason: str) -> None:
        if self.on_limit is not None:
            try:
                self.on_limit(reason)
            except Exception:
                log.exception("run %s: on_limit(%s) failed", self.run_id, reason)

    # -- the flusher --------------------------------------------------------------------------

    def _flush_loop(self) -> None:
        """Write as soon as something arrives after a quiet spell (a sparse run's events show
        at once), then at most every ``flush_interval`` while output keeps coming (batches)."""
        try:
            while True:
                with self._cond:
                    while not self.closed and not self.lost:
                        now = time.time()
                        for stream, (_, since, _) in list(self._partial.items()):
                            if now - since >= PARTIAL_LINE_AFTER:
                                self._release_partial(stream)
                        if self._items:
                            due = self._last_write + self.flush_interval - time.monotonic()
                            if due <= 0 or self._pending_bytes >= FLUSH_SOON_BYTES:
                                break
                            self._cond.wait(due)
                        elif self._partial:
                            oldest = min(since for _, since, _ in self._partial.values())
                            self._cond.wait(max(0.01, oldest + PARTIAL_LINE_AFTER - now))
                        else:
                            self._cond.wait(self.flush_interval)
                    done = self.closed
                with self._write_lock:
                    self._write_pending()
                if done or self.lost:
                    return
        finally:
            connection.close()

    def _notify(self, run_id: int, upto: int) -> None:
        # Writes happen in the flusher thread, or in close() after it stopped: one at a time.
        self._notifier.notify(run_id, upto)

    def _write_pending(self) -> None:
        with self._cond:
            items, self._items = self._items, []
            pending_bytes = self._pending_bytes
            updates = {k: v for k, v in self.totals.items() if self._written.get(k) != v}
        if not items and not updates:
            return
        events = [item.to_event() if isinstance(item, _LogBatch) else item for item in items]
        attempt = 0
        while True:
            try:
                upto = self._append_once(events, updates, retrying=attempt > 0)
                break
            except LeaseLost as exc:
                log.warning("run %s: %s; dropping %d events", self.run_id, exc, len(events))
                with self._cond:
                    self.lost = True
                    self._items.clear()
                    self._pending_bytes = 0
                    self._cond.notify_all()
                self._fire_limit("lease_lost")
                return
            except DatabaseError as exc:
                self.write_errors += 1
                now = time.monotonic()
                if self._failing_since is None:
                    self._failing_since = now
                log.warning(
                    "run %s: writing %d events failed (%s), attempt %d",
                    self.run_id,
                    len(events),
                    str(exc).strip(),
                    attempt,
                )
                with contextlib.suppress(Exception):
                    close_old_connections()
                    connection.close()
                if now - self._failing_since >= self.retry_budget:
                    # Keep them (in order, ahead of newer ones); the next round tries again.
                    with self._cond:
                        self._items[:0] = items
                    if not self.unavailable:
                        self.unavailable = True
                        log.error(
                            "run %s: the database did not answer for %.0f s; stopping the run "
                            "(%d events kept in memory, still retrying)",
                            self.run_id,
                            now - self._failing_since,
                            len(events),
                        )
                        self._fire_limit("database_unavailable")
                    time.sleep(RETRY_DELAYS[-1])
                    return
                time.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
                attempt += 1
        if self._failing_since is not None:
            waited = time.monotonic() - self._failing_since
            self._failing_since = None
            self.outage_seconds = max(self.outage_seconds, waited)
            # Say so in the log itself: the user sees why output paused, and that none was lost.
            # (Queued directly: this is the flusher, it must not wait for room behind itself.)
            notice = NewEvent(
                type="notice",
                ts=time.time(),
                data={
                    "kind": "database_outage",
                    "seconds": round(waited, 1),
                    "message": f"The database did not answer for {waited:.1f} s; the output "
                    "of that time was kept by the worker and written once it was back.",
                },
            )
            with self._cond:
                self._items.append(notice)
                self._cond.notify_all()
        self.last_written_seq = upto
        self._last_write = time.monotonic()
        self._written.update(updates)
        with self._cond:
            self._pending_bytes = max(0, self._pending_bytes - pending_bytes)
            self._cond.notify_all()

    def _append_once(self, events: list[NewEvent], updates: dict, *, retrying: bool) -> int:
        """One attempt. A retry first checks whether the failed attempt was committed after
        all (the connection dropped while the COMMIT's answer was on its way): the same events
        must not be written twice."""
        with transaction.atomic():
            if retrying and events:
                first = events[0]
                seq = (
                    RunEvent.objects.filter(
                        run_id=self.run_id,
                        seq__gt=self.last_written_seq,
                        type=first.type,
                        ts=_timestamp(first.ts),
                        line_start=first.line_start,
                    )
                    .values_list("seq", flat=True)
                    .first()
                )
                if seq is not None:
                    log.warning("run %s: the failed write was committed after all", self.run_id)
                    return seq + len(events) - 1
            return append_events(
                self.run_id,
                events,
                lease_owner=self.lease_owner,
                updates=updates,
                notify=self._notify,
            )
