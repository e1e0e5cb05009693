"""Requests per token in a fixed window, counted in Redis (shared by every web process); and,
per client IP, requests with a missing or invalid token (so token guessing is bounded).

The window is ``API_RATE_LIMIT_WINDOW_SECONDS`` long and aligned to the clock; a token may make
``API_RATE_LIMIT_REQUESTS`` requests in each. Past that the API answers 429 with Retry-After (the
seconds until the window ends). If Redis does not answer, requests are let through and a warning
is logged: the limit protects the service, it must not become the reason the service is down.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from dataclasses import dataclass

import redis
from django.conf import settings
from django.http import HttpRequest
from ninja.throttling import BaseThrottle

from .models import ApiToken

log = logging.getLogger(__name__)
KEY_PREFIX = "sandboxweb:api:rate"
AUTH_FAILURE_PREFIX = "sandboxweb:api:authfail"


@dataclass(frozen=True)
class RateLimit:
    requests: int
    window_seconds: int
    count: int
    retry_after: int

    @property
    def allowed(self) -> bool:
        return self.count <= self.requests

    @property
    def remaining(self) -> int:
        return max(0, self.requests - self.count)


@functools.cache
def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)


def _instance() -> str:
    # Installations (and test sessions) sharing one Redis must not share counters: token ids
    # repeat across databases, and one's failed logins must not lock out another's users.
    from apps.runs.execution import instance_tag

    return instance_tag()


def _key(token_id: int, window: int, now: float) -> str:
    return f"{KEY_PREFIX}:{_instance()}:{token_id}:{window}:{int(now // window)}"


def hit(*, token_id: int, now: float | None = None) -> RateLimit | None:
    """Count one request of the token; None when Redis cannot be reached."""
    requests = settings.API_RATE_LIMIT_REQUESTS
    window = settings.API_RATE_LIMIT_WINDOW_SECONDS
    now = time.time() if now is None else now
    key = _key(token_id, window, now)
    try:
        pipe = _client().pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, window + 1)
        count, _ = pipe.execute()
    except redis.RedisError as exc:
        log.warning("API rate limit not enforced, Redis error: %s", exc)
        return None
    retry_after = max(1, math.ceil(window - (now % window)))
    return RateLimit(requests, window, int(count), retry_after)


def peek(*, token_id: int) -> RateLimit | None:
    """The token's current window without counting a request."""
    window = settings.API_RATE_LIMIT_WINDOW_SECONDS
    now = time.time()
    try:
        count = int(_client().get(_key(token_id, window, now)) or 0)
    except redis.RedisError:
        return None
    retry_after = max(1, math.ceil(window - (now % window)))
    return RateLimit(settings.API_RATE_LIMIT_REQUESTS, window, count, retry_after)


class TokenRateThrottle(BaseThrottle):
    """ninja's throttle hook, run after authentication. ``wait`` has no request argument, so
    the last verdict is kept per thread (each request runs in one thread, start to end)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def allow_request(self, request: HttpRequest) -> bool:
        token = getattr(request, "auth", None)
        if not isinstance(token, ApiToken):
            return True
        limit = hit(token_id=token.pk)
        self._local.limit = limit
        request.api_rate_limit = limit  # type: ignore[attr-defined]
        return limit is None or limit.allowed

    def wait(self) -> float | None:
        limit = getattr(self._local, "limit", None)
        return float(limit.retry_after) if limit is not None else None


# -- failed authentication, per client IP ----------------------------------------------------


def _auth_failure_limits() -> tuple[int, int]:
    return settings.API_AUTH_FAILURE_LIMIT_REQUESTS, settings.API_AUTH_FAILURE_WINDOW_SECONDS


def _auth_failure_key(ip: str, window: int, now: float) -> str:
    return f"{AUTH_FAILURE_PREFIX}:{_instance()}:{ip}:{window}:{int(now // window)}"


def auth_failures(*, ip: str, now: float | None = None) -> RateLimit | None:
    """The address's failed authentications in this window, without counting one; None when
    Redis cannot be reached (the limit is then not enforced)."""
    requests, window = _auth_failure_limits()
    now = time.time() if now is None else now
    try:
        count = int(_client().get(_auth_failure_key(ip, window, now)) or 0)
    except redis.RedisError as exc:
        log.warning("API auth failure limit not enforced, Redis error: %s", exc)
        return None
    retry_after = max(1, math.ceil(window - (now % window)))
    return RateLimit(requests, window, count, retry_after)


def note_auth_failure(*, ip: str, now: float | None = None) -> None:
    """Count one request from ``ip`` whose token was missing, unknown, expired or revoked."""
    _requests, window = _auth_failure_limits()
    now = time.time() if now is None else now
    key = _auth_failure_key(ip, window, now)
    try:
        pipe = _client().pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, window + 1)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("API auth failure not counted, Redis error: %s", exc)
