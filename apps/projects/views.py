from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from apps.teams.selectors import get_team_for_user, require_project_role, role_in_project

from . import services
from .forms import ProjectForm
from .models import Project
from .selectors import get_project_for_user, list_projects_for_user


@login_required
def project_list(request: HttpRequest) -> HttpResponse:
    archived = request.GET.get("archived") == "1"
    projects = list_projects_for_user(user=request.user, archived=archived)
    return render(request, "projects/list.html", {"projects": projects, "archived": archived})


def _check_team_choice(request: HttpRequest) -> None:
    """A team id in the form must be a team the user may launch in: 404 for a team they are not
    in (or a forged id), 403 for one where they only view."""
    if request.method == "POST" and request.POST.get("team"):
        get_team_for_user(user=request.user, team_id=request.POST["team"], min_role="member")


@login_required
@require_http_methods(["GET", "POST"])
def project_create(request: HttpRequest) -> HttpResponse:
    _check_team_choice(request)
    form = ProjectForm(
        request.POST or None,
        instance=Project(owner=request.user),
        user=request.user,
        initial={"team": request.GET.get("team")} if request.GET.get("team") else None,
    )
    if request.method == "POST" and form.is_valid():
        try:
            project = services.create_project(
                owner=request.user,
                values=form.service_values(),
                set_secrets=form.cleaned_data["secrets_text"],
            )
        except ValidationError as exc:
            form.add_service_errors(exc)
        else:
            messages.success(request, f"Project {project.name} created.")
            return redirect("projects:detail", project_id=project.pk)
    status = 400 if form.errors else 200
    return render(request, "projects/form.html", {"form": form, "project": None}, status=status)


@login_required
def project_detail(request: HttpRequest, project_id: int) -> HttpResponse:
    project = get_project_for_user(user=request.user, project_id=project_id)
    runs = project.runs.select_related("user").order_by("-created_at", "-pk")[:20]
    role = role_in_project(user=request.user, project=project)
    return render(
        request,
        "projects/detail.html",
        {
            "project": project,
            "runs": runs,
            "secrets": project.secrets.all(),
            "role": role,
            "can_launch": role in ("owner", "admin", "member"),
            "can_manage": role in ("owner", "admin"),
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def project_edit(request: HttpRequest, project_id: int) -> HttpResponse:
    project = get_project_for_user(user=request.user, project_id=project_id)
    require_project_role(user=request.user, project=project, min_role="admin")
    _check_team_choice(request)
    form = ProjectForm(request.POST or None, instance=project, user=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            services.update_project(
                project=project,
                values=form.service_values(),
                set_secrets=form.cleaned_data["secrets_text"],
                delete_secrets=form.cleaned_data.get("delete_secrets") or [],
                actor=request.user,
            )
        except ValidationError as exc:
            project.refresh_from_db()
            form.add_service_errors(exc)
        else:
            messages.success(request, f"Project {project.name} saved.")
            return redirect("projects:detail", project_id=project.pk)
    status = 400 if form.errors else 200
    return render(request, "projects/form.html", {"form": form, "project": project}, status=status)


@login_required
@require_POST
def project_archive(request: HttpRequest, project_id: int) -> HttpResponse:
    project = get_project_for_user(user=request.user, project_id=project_id)
    require_project_role(user=request.user, project=project, min_role="admin")
    if request.POST.get("restore"):
        services.restore_project(project=project)
        messages.success(request, f"Project {project.name} restored.")
    else:
        services.archive_project(project=project)
        messages.success(request, f"Project {project.name} archived; its runs stay in the history.")
    return redirect("projects:detail", project_id=project.pk)
