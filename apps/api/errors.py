"""Every API error, from any layer, as ``{"error": {"code", "message", "field"}}``.

ninja's default handlers (``{"detail": ...}``, 422 for validation) are replaced here, and the
services' own exceptions are translated at this one boundary: Django's ValidationError is a 400
naming the field, Http404 a 404 that says nothing about whether the object exists, RunError and
TeamStateConflict a 409, PermissionDenied a 403.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from ninja.errors import AuthenticationError, HttpError, Throttled
from ninja.errors import ValidationError as NinjaValidationError

from apps.runs.exceptions import RunError
from apps.teams.services import TeamStateConflict

from .exceptions import ApiError

if TYPE_CHECKING:
    from ninja import NinjaAPI

log = logging.getLogger(__name__)

CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}
# Where a value came from is not part of its name: ("body", "payload", "overrides", "memory_mb")
# names the field "overrides.memory_mb"; ("query", "after") names "after".
SOURCES = {"body", "query", "path", "header", "cookie", "form", "file"}


def error_body(
    code: str, message: str, *, field: str | None = None, **extra: Any
) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field, **extra}}


def error_response(
    status: int, code: str, message: str, *, field: str | None = None, **extra: Any
) -> JsonResponse:
    return JsonResponse(error_body(code, message, field=field, **extra), status=status)


def _field_of(loc: list[Any] | tuple[Any, ...]) -> str | None:
    parts = list(loc)
    if parts and parts[0] in SOURCES:
        source = parts.pop(0)
        # The body and the history filters arrive as one parameter each: its name is noise.
        wrapped = source in {"body", "form"} or (source == "query" and parts[:1] == ["filters"])
        if wrapped and len(parts) > 1:
            parts.pop(0)
    parts = [str(part) for part in parts]
    return ".".join(parts) or None


def _validation(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    errors = exc.errors or [{}]
    first = errors[0]
    field = _field_of(first.get("loc") or ())
    message = str(first.get("msg") or "Invalid request.")
    if first.get("type") == "json_invalid" or field in {None, "payload"}:
        field = field if field != "payload" else None
    details = [
        {"field": _field_of(e.get("loc") or ()), "message": str(e.get("msg", ""))} for e in errors
    ]
    return error_response(
        400,
        "validation_error",
        f"{field}: {message}" if field else message,
        field=field,
        details=details,
    )


def _django_validation(request: HttpRequest, exc: DjangoValidationError) -> HttpResponse:
    if hasattr(exc, "error_dict"):
        field, messages = next(iter(exc.message_dict.items()))
        field_name = None if field == "__all__" else field
        message = " ".join(messages)
        return error_response(
            400,
            "validation_error",
            f"{field_name}: {message}" if field_name else message,
            field=field_name,
            details=[
                {"field": None if f == "__all__" else f, "message": " ".join(m)}
                for f, m in exc.message_dict.items()
            ],
        )
    return error_response(400, "validation_error", " ".join(exc.messages))


def _api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    extra: dict[str, Any] = {}
    limit = getattr(exc, "limit", None)
    if limit:
        extra["limit"] = limit
    response = error_response(exc.status, exc.code, exc.message, field=exc.field, **extra)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def _throttled(request: HttpRequest, exc: Throttled) -> HttpResponse:
    # ninja adds Retry-After from the throttle's wait(); the throttle left the details here.
    limit = getattr(request, "api_rate_limit", None)
    if limit is None:
        return error_response(429, "rate_limited", "Too many requests.", limit="api_requests")
    return error_response(
        429,
        "rate_limited",
        f"Rate limit reached: {limit.requests} requests per {limit.window_seconds} s for this "
        f"token. Retry after {limit.retry_after} s.",
        limit="api_requests_per_token",
    )


def _authentication(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return error_response(
        401,
        "not_authenticated",
        "Authenticate with the header 'Authorization: Bearer <token>' (create a token under "
        "Settings → API tokens).",
    )


def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return error_response(exc.status_code, CODES.get(exc.status_code, "error"), str(exc))


def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    # One message for "does not exist" and "not yours": the caller learns nothing.
    return error_response(404, "not_found", "Not found.")


def _permission_denied(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return error_response(403, "forbidden", str(exc) or "You may not do this.")


def _run_error(request: HttpRequest, exc: RunError) -> HttpResponse:
    return error_response(409, "conflict", str(exc))


def _team_state(request: HttpRequest, exc: TeamStateConflict) -> HttpResponse:
    # A ValidationError for the pages; here an invalid state change (revoked invitation, last
    # owner) is a 409 like cancelling a finished run.
    return error_response(409, "conflict", " ".join(exc.messages))


def _server_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    log.exception("API error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "server_error", "Internal error; it was logged.")


def install(api: NinjaAPI) -> None:
    """Replace ninja's handlers; the most specific class of an exception wins (by MRO)."""
    api.add_exception_handler(Exception, _server_error)
    api.add_exception_handler(NinjaValidationError, _validation)
    api.add_exception_handler(DjangoValidationError, _django_validation)
    api.add_exception_handler(HttpError, _http_error)
    api.add_exception_handler(AuthenticationError, _authentication)
    api.add_exception_handler(Throttled, _throttled)
    api.add_exception_handler(Http404, _not_found)
    api.add_exception_handler(PermissionDenied, _permission_denied)
    api.add_exception_handler(RunError, _run_error)
    api.add_exception_handler(TeamStateConflict, _team_state)
    api.add_exception_handler(ApiError, _api_error)
