"""The one module that names run groups and sends to them.

The channel layer is a doorbell, not a mailbox: a notice says "run R has events up to seq N" and
carries no data. Consumers read the events from the database, so a dropped notice only delays
delivery until the next one (or the consumer's own poll), it never loses anything.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal, TypedDict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)


class RunTick(TypedDict):
    type: Literal["run.tick"]
    upto: int


class AccessChanged(TypedDict):
    type: Literal["access.changed"]


def run_group(run_id: int) -> str:
    return f"run-{int(run_id)}"


def user_group(user_id: int) -> str:
    """Every run socket of a user joins this group, so access changes reach them all."""
    return f"user-{int(user_id)}"


def notify_access_changed(user_id: int) -> None:
    """The user's roles changed (removed from a team, demoted): their open run sockets re-check
    access and close the ones they may no longer see. Call after the commit."""
    layer = get_channel_layer()
    if layer is None:
        return
    message: AccessChanged = {"type": "access.changed"}
    try:
        async_to_sync(layer.group_send)(user_group(user_id), message)
    except Exception as exc:  # Redis down: the consumer's poll re-checks access anyway
        log.warning("user %s: access-changed notice failed: %s", user_id, exc)


def notify_run(run_id: int, upto: int) -> None:
    """Ring the bell for a run's watchers; best effort (call it after the commit)."""
    layer = get_channel_layer()
    if layer is None:
        return
    message: RunTick = {"type": "run.tick", "upto": int(upto)}
    try:
        async_to_sync(layer.group_send)(run_group(run_id), message)
    except Exception as exc:  # Redis down: watchers fall back to polling the database.
        log.warning("run %s: notifying watchers failed: %s", run_id, exc)


class RunNotifier:
    """Notices from one long-lived thread (a run's recorder) over one event loop of its own.

    ``async_to_sync`` builds a new loop, and so a new Redis connection, for every call (5-10 ms
    each); a recorder rings the bell up to ten times a second for hours, so it keeps one loop
    (and its connection pool) instead. Use from a single thread; ``close()`` when done.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def notify(self, run_id: int, upto: int) -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        message: RunTick = {"type": "run.tick", "upto": int(upto)}
        try:
            self._loop.run_until_complete(
                asyncio.wait_for(layer.group_send(run_group(run_id), message), timeout=5)
            )
        except Exception as exc:  # Redis down: watchers fall back to polling the database.
            log.warning("run %s: notifying watchers failed: %s", run_id, exc)

    def close(self) -> None:
        if self._loop is not None:
            # channels_redis hooks loop.close() to release the loop's connection pool.
            self._loop.close()
            self._loop = None


def warm_up() -> None:
    """Import the channel layer's client libraries now (about a second of imports), not in the
    middle of a run's first notice."""
    get_channel_layer()
