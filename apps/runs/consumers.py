"""``/ws/runs/<id>/?after=<seq>``: a run's events, replayed from the database, then live.

Protocol (server → browser, JSON text frames):

- ``{"type": "events", "events": [{"seq", "type", "ts", "data"}, ...]}`` in ``seq`` order, each
  event exactly once per connection (``last_sent`` only grows);
- ``{"type": "run.end", "status", "end_reason", "last_seq"}`` once the run is finished and
  everything up to its last event was sent; the server then closes the socket;
- ``{"type": "pong", "last_seq"}`` answering ``{"type": "ping"}``.

The consumer authenticates and authorizes before it accepts or joins the group (close 4401
anonymous, 4403 no access). Group notices only say "up to seq N"; the events are read from the
database, so a notice lost by the channel layer delays delivery by at most one poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from .channels import run_group, user_group
from .models import Run
from .selectors import can_view_run, events_after, run_state

PAGE_EVENTS = 500
POLL_SECONDS = 2.0  # the safety net under lost notices
FRAME_BYTES = 512 * 1024  # daphne refuses to send WebSocket messages over 1 MiB


@database_sync_to_async
def _authorized(user, run_id: int) -> bool:
    return can_view_run(user=user, run_id=run_id)


@database_sync_to_async
def _read(user, run_id: int, after: int) -> tuple[bool, tuple[str, int] | None, list[dict]]:
    """Access re-check, the run's state, and the next page after ``after`` - one round trip."""
    if not can_view_run(user=user, run_id=run_id):
        return False, None, []
    state = run_state(run_id=run_id)
    return True, state, events_after(run_id=run_id, after=after, limit=PAGE_EVENTS)


def frames(events: list[dict]) -> list[str]:
    """``events`` as ``{"type": "events"}`` messages of at most about FRAME_BYTES each."""
    result: list[str] = []
    parts: list[str] = []
    size = 0
    for event in events:
        encoded = json.dumps(event, separators=(",", ":"))
        if parts and size + len(encoded) > FRAME_BYTES:
            result.append('{"type":"events","events":[' + ",".join(parts) + "]}")
            parts, size = [], 0
        parts.append(encoded)
        size += len(encoded) + 1
    if parts:
        result.append('{"type":"events","events":[' + ",".join(parts) + "]}")
    return result


class RunConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        try:
            self.run_id = int(self.scope["url_route"]["kwargs"]["run_id"])
        except (KeyError, TypeError, ValueError):
            await self.close(code=4404)
            return
        if not await _authorized(user, self.run_id):
            await self.close(code=4403)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        try:
            self.last_sent = max(0, int((query.get("after") or ["0"])[0]))
        except ValueError:
            self.last_sent = 0
        self.user = user
        self.ended = False
        self.group = run_group(self.run_id)
        self.lock = asyncio.Lock()
        self.last_pump = time.monotonic()
        await self.accept()
        # Join first, then replay: a notice arriving meanwhile only triggers a (cheap) re-read.
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.user_group = user_group(user.pk)
        await self.channel_layer.group_add(self.user_group, self.channel_name)
        await self.pump()
        self.poller = asyncio.ensure_future(self.poll())

    async def disconnect(self, code: int) -> None:
        poller = getattr(self, "poller", None)
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await poller
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)
        if getattr(self, "user_group", None):
            await self.channel_layer.group_discard(self.user_group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            message = json.loads(text_data or "{}")
        except ValueError:
            return
        if isinstance(message, dict) and message.get("type") == "ping":
            await self.pump()
            await self.send(text_data=json.dumps({"type": "pong", "last_seq": self.last_sent}))

    async def run_tick(self, message: dict) -> None:
        if int(message.get("upto") or 0) > self.last_sent:
            await self.pump()

    async def access_changed(self, message: dict) -> None:
        """Removed from the run's team (or demoted): close at once if access is gone."""
        if not self.ended and not await _authorized(self.user, self.run_id):
            self.ended = True
            await self.close(code=4403)

    async def poll(self) -> None:
        # Only when no notice arrived for a while: a busy run costs no extra reads.
        while not self.ended:
            await asyncio.sleep(POLL_SECONDS)
            if time.monotonic() - self.last_pump >= POLL_SECONDS:
                await self.pump()

    async def pump(self) -> None:
        """Send everything after ``last_sent``, page by page; end the stream when the run is
        finished and fully sent."""
        async with self.lock:
            self.last_pump = time.monotonic()
            while not self.ended:
                allowed, state, events = await _read(self.user, self.run_id, self.last_sent)
                if not allowed or state is None:
                    self.ended = True
                    await self.close(code=4403)
                    return
                if events:
                    for frame in frames(events):
                        await self.send(text_data=frame)
                    self.last_sent = events[-1]["seq"]
                status, last_seq = state
                if len(events) >= PAGE_EVENTS or (events and self.last_sent < last_seq):
                    continue
                if status in Run.TERMINAL and self.last_sent >= last_seq:
                    await self.finish(status)
                return

    async def finish(self, status: str) -> None:
        run = await Run.objects.filter(pk=self.run_id).values("end_reason", "last_seq").afirst()
        self.ended = True
        await self.send(
            text_data=json.dumps(
                {
                    "type": "run.end",
                    "status": status,
                    "end_reason": (run or {}).get("end_reason", ""),
                    "last_seq": self.last_sent,
                }
            )
        )
        await self.close(code=1000)
