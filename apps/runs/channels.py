"""The one module that names run groups and sends to them.

The channel layer is a doorbell, not a mailbox: a notice says "run R has events up to seq N" and
carries no data. Consumers read the events from the database, so a dropped notice only delays
delivery until the next one (or the consumer's own poll), it never loses anything.
"""

from __future__ import annotations

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
