"""Reads of projects. ``projects_visible_to`` is the one access rule: a user sees the projects
they created and the projects of every team they belong to (any role; what they may *do* there
is apps/teams/selectors.py: ``require_project_role``)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, Max, Q, QuerySet
from django.http import Http404

from .models import Project


def projects_visible_to(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Project]:
    if not user.is_authenticated:
        return Project.objects.none()
    from apps.teams.selectors import team_ids_of

    # A subquery, not a join: no duplicates, so callers may annotate counts safely.
    return Project.objects.filter(Q(owner_id=user.pk) | Q(team_id__in=team_ids_of(user)))


def get_project_for_user(
    *, user: AbstractBaseUser | AnonymousUser, project_id: int | str
) -> Project:
    """The project, or Http404 for anyone who may not see it (strangers learn nothing)."""
    try:
        return projects_visible_to(user).get(pk=int(project_id))
    except (Project.DoesNotExist, ValueError, TypeError):
        raise Http404("No such project") from None


def list_projects_for_user(
    *, user: AbstractBaseUser | AnonymousUser, archived: bool = False
) -> QuerySet[Project]:
    return (
        projects_visible_to(user)
        .filter(archived_at__isnull=not archived)
        .annotate(run_count=Count("runs"), last_run_at=Max("runs__created_at"))
        .order_by("name")
    )
