"""Failed log-ins, counted per username and per client address in the shared (Redis) cache.

Past ``LOGIN_FAILURE_LIMIT`` failures for one username, or ``LOGIN_IP_FAILURE_LIMIT`` from one
address, within ``LOGIN_FAILURE_WINDOW_SECONDS``, every log-in for that username (or from that
address) is refused until the lock ends — even with the right password, so guessing gains
nothing. The per-address limit is higher because offices share one address behind NAT.

It hooks into ``django.contrib.auth.authenticate`` (an authentication backend plus the
``user_login_failed``/``user_logged_in`` signals), so the admin log-in is covered as well as the
site's. A success resets that username's count, not the address's: otherwise one valid account
would let an attacker clear the address counter between guesses.

Counters are clock-aligned windows (``int(now // window)`` in the key, increments atomic in
Redis); a lock stores the time it ends, compared against :func:`now` so tests can move the clock.
Redis expiry only cleans up. If the cache does not answer, log-in is not throttled (and a warning
logged): the throttle must not become the reason nobody can log in.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest

from apps.audit.context import client_ip
from apps.audit.services import Action, record

log = logging.getLogger(__name__)

ACTION_LOCKOUT = Action.LOGIN_LOCKOUT


def now() -> float:
    return time.time()


def _namespace() -> str:
    # The instance tag names this installation's database: two installations (or test sessions)
    # sharing one Redis never lock each other's users out.
    from apps.runs.execution import instance_tag

    return f"login:{instance_tag()}"


def _subject(kind: str, value: str) -> str:
    # Hashed: usernames and addresses need not sit in Redis in clear, and any length fits a key.
    return f"{kind}:{hashlib.sha256(value.encode()).hexdigest()[:32]}"


def _subjects(username: str | None, ip: str | None) -> list[tuple[str, int]]:
    subjects = []
    if username:
        subjects.append((_subject("user", username.strip().lower()), settings.LOGIN_FAILURE_LIMIT))
    if ip:
        subjects.append((_subject("ip", ip), settings.LOGIN_IP_FAILURE_LIMIT))
    return subjects


@dataclass(frozen=True)
class Lockout:
    seconds: int

    @property
    def minutes(self) -> int:
        return max(1, math.ceil(self.seconds / 60))


def locked(*, username: str | None, ip: str | None) -> Lockout | None:
    """The lock on this username or address, if any (the longer one when both are locked)."""
    keys = [f"{_namespace()}:lock:{subject}" for subject, _limit in _subjects(username, ip)]
    if not keys:
        return None
    try:
        until = cache.get_many(keys)
    except Exception as exc:  # any cache failure: do not throttle
        log.warning("Log-in throttle not enforced, cache error: %s", exc)
        return None
    remaining = max((float(value) - now() for value in until.values()), default=0)
    return Lockout(math.ceil(remaining)) if remaining > 0 else None


def note_failure(*, username: str | None, ip: str | None) -> bool:
    """Count one failed log-in; True when it locked the username or the address just now."""
    window = settings.LOGIN_FAILURE_WINDOW_SECONDS
    moment = now()
    bucket = int(moment // window)
    locked_now = False
    try:
        for subject, limit in _subjects(username, ip):
            key = f"{_namespace()}:fail:{subject}:{bucket}"
            cache.add(key, 0, timeout=window + 1)
            count = cache.incr(key)
            if count == limit:
                # The lock runs a whole window from the failure that set it.
                cache.set(f"{_namespace()}:lock:{subject}", moment + window, timeout=window + 1)
                locked_now = True
    except Exception as exc:
        log.warning("Failed log-in not counted, cache error: %s", exc)
    return locked_now


def reset(*, username: str) -> None:
    """A successful log-in clears the username's failures (the address's stay, see above)."""
    subject = _subject("user", username.strip().lower())
    bucket = int(now() // settings.LOGIN_FAILURE_WINDOW_SECONDS)
    try:
        cache.delete_many(
            [f"{_namespace()}:fail:{subject}:{bucket}", f"{_namespace()}:lock:{subject}"]
        )
    except Exception as exc:
        log.warning("Log-in failures not reset, cache error: %s", exc)


class ThrottledModelBackend(ModelBackend):
    """Django's model backend, refusing any log-in for a locked username or address."""

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> Any:
        if request is not None:
            lock = locked(username=username, ip=client_ip(request))
            if lock is not None:
                # Read by the log-in page to say why and for how long; PermissionDenied stops
                # authenticate() from trying any other backend.
                request.login_lockout = lock  # type: ignore[attr-defined]
                raise PermissionDenied
        return super().authenticate(request, username=username, password=password, **kwargs)


def _on_login_failed(
    sender: Any, credentials: dict, request: HttpRequest | None = None, **kwargs: Any
) -> None:
    if request is None or getattr(request, "login_lockout", None) is not None:
        return  # refused while locked: the lock already runs, counting again changes nothing
    username = credentials.get("username")
    ip = client_ip(request)
    if note_failure(username=username, ip=ip):
        request.login_lockout = locked(username=username, ip=ip)  # type: ignore[attr-defined]
        with transaction.atomic():
            record(
                actor=None,
                action=ACTION_LOCKOUT,
                target_type="auth.user",
                target_id="",
                target_repr=(username or "")[:150],
                after={
                    "username": (username or "")[:150],
                    "ip": ip,
                    "window_seconds": settings.LOGIN_FAILURE_WINDOW_SECONDS,
                },
            )


def _on_logged_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    reset(username=user.get_username())


def connect_signals() -> None:
    user_login_failed.connect(_on_login_failed, dispatch_uid="core.login_throttle.failed")
    user_logged_in.connect(_on_logged_in, dispatch_uid="core.login_throttle.logged_in")
