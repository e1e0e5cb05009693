"""Who is asking, from where: set per request by the middleware, read by ``record``.

A context variable rather than an argument threaded through every service: the IP and user
agent are facts about the request, not about the change, and services called from a worker or a
shell simply have none.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

from django.http import HttpRequest, HttpResponse


@dataclass(frozen=True)
class RequestInfo:
    ip: str | None
    user_agent: str


_current: ContextVar[RequestInfo | None] = ContextVar("audit_request", default=None)


def current_request_info() -> RequestInfo | None:
    return _current.get()


def client_ip(request: HttpRequest) -> str | None:
    # REMOTE_ADDR only: X-Forwarded-For is client-controlled unless a trusted proxy rewrites it,
    # and deployments behind one set REMOTE_ADDR through their ASGI server's proxy settings.
    return request.META.get("REMOTE_ADDR") or None


class AuditContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _current.set(
            RequestInfo(
                ip=client_ip(request),
                user_agent=(request.META.get("HTTP_USER_AGENT") or "")[:300],
            )
        )
        try:
            return self.get_response(request)
        finally:
            _current.reset(token)
