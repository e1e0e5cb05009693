"""``Authorization: Bearer <token>`` for the API, with the scope each operation needs.

The request then acts as the token's owner (``request.user``): every read and write goes through
the same selectors and services as the UI, so a token can never reach more than its owner can,
and the scopes can only narrow that further.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.security import HttpBearer

from apps.audit.context import client_ip

from . import ratelimit
from . import scopes as scope_rules
from .exceptions import Forbidden, NotAuthenticated, RateLimited
from .models import ApiToken
from .services import authenticate_token


class TokenAuth(HttpBearer):
    def __init__(self, scope: str | None = None) -> None:
        if scope is not None and scope not in scope_rules.SCOPES:
            raise ValueError(f"unknown scope {scope}")
        self.scope = scope
        super().__init__()

    def __call__(self, request: HttpRequest) -> ApiToken | None:
        """Requests with a missing or invalid token are counted per client IP; past the limit
        the address gets 429 before any token it sends is looked at, so a guess can never tell
        a right token from a wrong one, and guessing is bounded per window."""
        ip = client_ip(request) or "unknown"
        failures = ratelimit.auth_failures(ip=ip)
        if failures is not None and failures.count >= failures.requests:
            raise RateLimited(
                f"Too many requests without a valid token from this address: "
                f"{failures.requests} per {failures.window_seconds} s. "
                f"Retry after {failures.retry_after} s.",
                retry_after=failures.retry_after,
                limit="api_auth_failures_per_ip",
            )
        try:
            result = super().__call__(request)
        except NotAuthenticated:
            ratelimit.note_auth_failure(ip=ip)
            raise
        if result is None:  # no Authorization header, or not a Bearer one
            ratelimit.note_auth_failure(ip=ip)
        return result

    def authenticate(self, request: HttpRequest, token: str) -> ApiToken:
        # Raising (instead of returning None) lets the caller see why: expired, revoked, ...
        api_token = authenticate_token(raw=token.strip())
        if self.scope and self.scope not in scope_rules.expand(api_token.scopes):
            raise Forbidden(
                f"This token lacks the {self.scope} scope.", code="missing_scope", field=None
            )
        request.user = api_token.user
        return api_token


def token_auth(scope: str | None = None) -> Any:
    """The ``auth=`` of an operation that needs ``scope`` (None: any valid token)."""
    return TokenAuth(scope)
