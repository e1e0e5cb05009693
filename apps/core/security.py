"""Per-request additions to the Content-Security-Policy that a static setting cannot express."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


class WebSocketOriginCSPMiddleware:
    """Allow the page's own WebSocket origin in connect-src.

    CSP Level 3 lets ``'self'`` match ``ws:``/``wss:`` on the same host, but older engines do not,
    and the live run page must not silently lose its socket there. The origin is built from the
    validated host (``ALLOWED_HOSTS``), so a forged Host header cannot widen the policy. Listed
    after ``CSPMiddleware`` so it runs first on the way out; a view's own ``csp_update`` is kept.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "html" not in response.get("Content-Type", ""):
            return response
        try:
            host = request.get_host()
        except Exception:  # DisallowedHost: the response is already an error page
            return response
        origin = f"{'wss' if request.is_secure() else 'ws'}://{host}"
        update = dict(getattr(response, "_csp_update", None) or {})
        update["connect-src"] = [*update.get("connect-src", []), origin]
        response._csp_update = update  # type: ignore[attr-defined]
        return response
