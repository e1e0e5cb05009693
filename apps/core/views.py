from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from apps.projects.selectors import list_projects_for_user
from apps.runs.selectors import recent_runs_for_user

from .health import run_checks


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Machine-readable health for load balancers and monitoring: 200 when all parts answer."""
    checks = run_checks()
    healthy = all(check.ok for check in checks.values())
    # Versions help an operator but also an attacker: only signed-in users see them.
    detailed = request.user.is_authenticated
    return JsonResponse(
        {
            "status": "ok" if healthy else "degraded",
            "checks": {
                name: vars(check) if detailed else {"ok": check.ok, "message": check.message}
                for name, check in checks.items()
            },
        },
        status=200 if healthy else 503,
    )


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "core/home.html",
        {
            "checks": run_checks(),
            "recent_runs": recent_runs_for_user(user=request.user, limit=8),
            "projects": list(list_projects_for_user(user=request.user)[:8]),
        },
    )
