"""/api/v1/projects: list, create, read, update, archive, restore."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest
from ninja import Router, Status

from apps.projects import selectors, services
from apps.projects.models import Project
from apps.teams.selectors import get_team_for_user, require_project_role, role_in_project

from ..auth import token_auth
from ..schemas import Id, ProjectIn, ProjectListOut, ProjectOut, ProjectPatch
from .common import ERRORS, errors

router = Router(tags=["projects"])
READ = token_auth("projects:read")
WRITE = token_auth("projects:write")


def project_out(project: Project, *, user) -> dict:
    """As stored (a value given as 1.5 reads back as the database keeps it: 1.50)."""
    return {
        **{field: getattr(project, field) for field in services.EDITABLE_FIELDS if field != "team"},
        "id": project.pk,
        "owner": project.owner.get_username(),
        "team": project.team_id,
        "team_name": project.team.name if project.team_id else None,
        "role": role_in_project(user=user, project=project),
        "secrets": [
            {"name": s.name, "fingerprint": s.fingerprint, "updated_at": s.updated_at}
            for s in project.secrets.all()
        ],
        "archived": project.is_archived,
        "archived_at": project.archived_at,
        "created_at": project.created_at,
        "updated_at": project.updated_at,
    }


def _fetch(request: HttpRequest, project_id: int) -> Project:
    return selectors.get_project_for_user(user=request.user, project_id=project_id)


@router.get(
    "/projects",
    auth=READ,
    response={200: ProjectListOut, **errors(400, 401, 403, 429)},
    summary="List projects",
)
def list_projects(request: HttpRequest, archived: bool = False) -> dict:
    projects = (
        selectors.list_projects_for_user(user=request.user, archived=archived)
        .select_related("owner", "team")
        .prefetch_related("secrets")
    )
    return {"items": [project_out(p, user=request.user) for p in projects]}


@router.post(
    "/projects",
    auth=WRITE,
    response={201: ProjectOut, **ERRORS},
    summary="Create a project",
)
def create_project(request: HttpRequest, payload: ProjectIn) -> Status:
    values = _defined(payload.model_dump(exclude_unset=True, exclude={"secrets"}))
    if values.get("team") is not None:
        values["team"] = _team_for_launching(request, values["team"])
    project = services.create_project(
        owner=request.user, values=values, set_secrets=payload.secrets or {}
    )
    project.refresh_from_db()
    return Status(201, project_out(project, user=request.user))


@router.get(
    "/projects/{project_id}",
    auth=READ,
    response={200: ProjectOut, **ERRORS},
    summary="Read a project",
)
def get_project(request: HttpRequest, project_id: Id) -> dict:
    return project_out(_fetch(request, project_id), user=request.user)


@router.patch(
    "/projects/{project_id}",
    auth=WRITE,
    response={200: ProjectOut, **ERRORS},
    summary="Change a project (only the fields sent)",
)
def update_project(request: HttpRequest, project_id: Id, payload: ProjectPatch) -> dict:
    with transaction.atomic():
        project = _fetch(request, project_id)
        require_project_role(user=request.user, project=project, min_role="admin")
        values = _defined(
            payload.model_dump(exclude_unset=True, exclude={"secrets", "delete_secrets"})
        )
        if values.get("team") is not None:
            values["team"] = _team_for_launching(request, values["team"])
        project = services.update_project(
            project=project,
            values=values,
            set_secrets=payload.secrets or {},
            delete_secrets=payload.delete_secrets or (),
            actor=request.user,
        )
        project.refresh_from_db()
    return project_out(project, user=request.user)


@router.post(
    "/projects/{project_id}/archive",
    auth=WRITE,
    response={200: ProjectOut, **ERRORS},
    summary="Archive a project (its runs stay; no new runs)",
)
def archive_project(request: HttpRequest, project_id: Id) -> dict:
    project = _fetch(request, project_id)
    require_project_role(user=request.user, project=project, min_role="admin")
    return project_out(services.archive_project(project=project), user=request.user)


@router.post(
    "/projects/{project_id}/restore",
    auth=WRITE,
    response={200: ProjectOut, **ERRORS},
    summary="Restore an archived project",
)
def restore_project(request: HttpRequest, project_id: Id) -> dict:
    project = _fetch(request, project_id)
    require_project_role(user=request.user, project=project, min_role="admin")
    return project_out(services.restore_project(project=project), user=request.user)


def _team_for_launching(request: HttpRequest, team_id: int):
    """As in the project form: 404 for a team the caller is not in, 403 where they only view."""
    team, _ = get_team_for_user(user=request.user, team_id=team_id, min_role="member")
    return team


# Fields that may be null in the model; for any other, an explicit null means "leave as it is".
NULLABLE = {"max_tokens_total", "max_cost_usd", "team"}


def _defined(values: dict) -> dict:
    return {k: v for k, v in values.items() if v is not None or k in NULLABLE}
