"""The admins' limits screen (staff only) and the usage page (everyone, for what they see)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.teams.models import Team

from . import services, usage
from .forms import LimitPolicyForm
from .models import LimitPolicy
from .selectors import get_policy, list_overrides, require_limits_admin


def _require_staff(request: HttpRequest) -> None:
    require_limits_admin(request.user)


def _instance_policy() -> LimitPolicy:
    return get_policy(scope=LimitPolicy.Scope.INSTANCE)


def _target(request: HttpRequest) -> tuple[str, Team | None, object | None]:
    scope = request.POST.get("scope") or request.GET.get("scope") or LimitPolicy.Scope.INSTANCE
    data = request.POST if request.method == "POST" else request.GET
    if scope == LimitPolicy.Scope.TEAM:
        try:
            return scope, Team.objects.get(pk=int(data.get("team", ""))), None
        except (Team.DoesNotExist, ValueError):
            raise Http404("No such team") from None
    if scope == LimitPolicy.Scope.USER:
        name = (data.get("username") or "").strip()
        user = get_user_model().objects.filter(username__iexact=name).first()
        if user is None:
            raise Http404("No such user")
        return scope, None, user
    if scope != LimitPolicy.Scope.INSTANCE:
        raise Http404("No such scope")
    return scope, None, None


@login_required
@require_http_methods(["GET", "POST"])
def manage(request: HttpRequest) -> HttpResponse:
    """All limits on one screen: the instance default, each team's and each user's overrides.
    GET ?scope=team&team=ID or ?scope=user&username=NAME opens that row's form."""
    _require_staff(request)
    scope, team, user = _target(request)
    policy = get_policy(scope=scope, team=team, user=user)
    form = LimitPolicyForm(request.POST or None, instance=policy)
    if request.method == "POST" and form.is_valid():
        try:
            services.save_policy(
                actor=request.user, scope=scope, values=form.values(), team=team, user=user
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Limits saved for {policy}.")
            return redirect("limits:manage")
    overrides = list_overrides()
    return render(
        request,
        "limits/manage.html",
        {
            "form": form,
            "editing": policy,
            "scope": scope,
            "instance": _instance_policy(),
            "team_overrides": [p for p in overrides if p.scope == LimitPolicy.Scope.TEAM],
            "user_overrides": [p for p in overrides if p.scope == LimitPolicy.Scope.USER],
            "teams": Team.objects.order_by("name"),
            "ceiling": services.ceiling_rows(),
        },
        status=400 if form.errors else 200,
    )


@login_required
@require_POST
def delete_override(request: HttpRequest, policy_id: int) -> HttpResponse:
    _require_staff(request)
    try:
        policy = LimitPolicy.objects.select_related("team", "user").get(pk=policy_id)
    except LimitPolicy.DoesNotExist:
        raise Http404("No such limits row") from None
    try:
        services.delete_policy(actor=request.user, policy=policy)
    except ValidationError as exc:
        messages.error(request, "; ".join(exc.messages))
    else:
        messages.success(request, f"Override for {policy} removed; the defaults apply again.")
    return redirect("limits:manage")


@login_required
@require_GET
def usage_page(request: HttpRequest) -> HttpResponse:
    """Usage of the signed-in user, one of their teams (?team=) or a visible project
    (?project=): 404 for anything they cannot see."""
    report = usage.report_for_request(user=request.user, params=request.GET)
    return render(request, "limits/usage.html", {"report": report, **usage.choices(request.user)})
