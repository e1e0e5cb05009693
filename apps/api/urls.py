"""/api/v1/...: the ninja API, plus JSON errors for what ninja answers in HTML or plain text
(405 for a known path with another method, 404 for any unknown path under the prefix)."""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.urls import URLPattern, path, re_path
from django.views.decorators.csrf import csrf_exempt

from .api import api
from .errors import error_response


def _json_405(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        response = view(request, *args, **kwargs)
        if isinstance(response, HttpResponseNotAllowed):
            allowed = response["Allow"]
            response = error_response(
                405,
                "method_not_allowed",
                f"{request.method} is not allowed here; use {allowed}.",
            )
            response["Allow"] = allowed
        return response

    return wrapper


@csrf_exempt
def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    return error_response(404, "not_found", f"No API endpoint at {request.path}.")


# Not named app_name / namespace: include() would take a module-level app_name as this
# module's namespace.
_patterns, _ninja_app, _namespace = api.urls
for _pattern in _patterns:
    if isinstance(_pattern, URLPattern):
        _pattern.callback = _json_405(_pattern.callback)

urlpatterns = [
    path("", (_patterns, _ninja_app, _namespace)),
    re_path(r"^(?P<rest>.*)$", not_found),
]
