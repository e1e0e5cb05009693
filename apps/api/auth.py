"""``Authorization: Bearer <token>`` for the API, with the scope each operation needs.

The request then acts as the token's owner (``request.user``): every read and write goes through
the same selectors and services as the UI, so a token can never reach more than its owner can,
and the scopes can only narrow that further.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.security import HttpBearer

from . import scopes as scope_rules
from .exceptions import Forbidden
from .models import ApiToken
from .services import authenticate_token


class TokenAuth(HttpBearer):
    def __init__(self, scope: str | None = None) -> None:
        if scope is not None and scope not in scope_rules.SCOPES:
            raise ValueError(f"unknown scope {scope}")
        self.scope = scope
        super().__init__()

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
