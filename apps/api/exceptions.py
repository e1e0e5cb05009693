"""The API's one error family. :mod:`apps.api.errors` turns each into the JSON error shape."""

from __future__ import annotations


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code:
            self.code = code


class NotAuthenticated(ApiError):
    """No token, or one that is unknown, expired or revoked (``code`` says which)."""

    status = 401
    code = "not_authenticated"


class Forbidden(ApiError):
    """The token lacks a scope, or the owner lacks the role, for this action."""

    status = 403
    code = "forbidden"


class Conflict(ApiError):
    """The object is in a state that does not allow this change (cancel a finished run)."""

    status = 409
    code = "conflict"


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, limit: str, code: str = "rate_limited"):
        super().__init__(message, code=code)
        self.retry_after = retry_after
        self.limit = limit
