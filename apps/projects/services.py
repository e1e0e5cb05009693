"""Writes to projects and their secrets. Every function validates before it saves."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from . import crypto, limits, validation
from .models import Project, ProjectSecret

EDITABLE_FIELDS = (
    "name",
    "team",
    "description",
    "default_kind",
    "provider",
    "image",
    "cpu_cores",
    "memory_mb",
    "disk_mb",
    "timeout_seconds",
    "network_mode",
    "env",
    "log_limit_mb",
    "system_prompt",
    "model",
    "max_turns",
    "max_tokens_total",
    "max_cost_usd",
    "capture_patterns",
    "default_commands",
)
MAX_SECRET_BYTES = 64 * 1024


def _validate(project: Project, *, secret_names: Iterable[str]) -> None:
    errors: dict[str, list[str]] = {}

    def check(field: str, func: Any, *args: Any, **kwargs: Any) -> None:
        try:
            func(*args, **kwargs)
        except ValidationError as exc:
            errors.setdefault(field, []).extend(exc.messages)

    check("image", validation.validate_image, project.image)
    check("provider", validation.validate_provider, project.provider)
    check(
        "provider",
        validation.validate_provider_ready,
        project.provider,
        secret_names=secret_names,
    )
    check("env", validation.validate_env, project.env, secret_names=secret_names)
    check("capture_patterns", validation.validate_capture_patterns, project.capture_patterns)
    for field in limits.LIMIT_FIELDS:
        value = getattr(project, field)
        if value is None:
            continue
        low, high = limits.minimum(field), limits.maximum(field)
        if not low <= value <= high:
            errors.setdefault(field, []).append(
                f"Must be between {low:g} and {high:g} (the admin's limit)."
            )
    if project.default_kind == Project.Kind.AGENT and not project.system_prompt.strip():
        errors.setdefault("system_prompt", []).append("An agent project needs a system prompt.")
    if errors:
        raise ValidationError(errors)
    project.full_clean(validate_constraints=True)


def _apply_secret_changes(
    project: Project,
    set_secrets: Mapping[str, str],
    delete_secrets: Iterable[str],
    *,
    actor: AbstractBaseUser | None = None,
) -> None:
    """Audited in the caller's transaction: names and fingerprints only, never values."""
    from apps.audit.services import Action, record

    existing = dict(project.secrets.values_list("name", "fingerprint"))
    for name in delete_secrets:
        if ProjectSecret.objects.filter(project=project, name=name).delete()[0]:
            record(
                actor=actor,
                action=Action.SECRET_DELETE,
                target_type="projects.projectsecret",
                target_id=project.pk,
                target_repr=f"{project.name}: {name}",
                team_id=project.team_id,
                before={"name": name, "fingerprint": existing.get(name)},
                after=None,
            )
    for name, value in set_secrets.items():
        fingerprint = crypto.fingerprint(value)
        ProjectSecret.objects.update_or_create(
            project=project,
            name=name,
            defaults={"ciphertext": crypto.encrypt(value), "fingerprint": fingerprint},
        )
        record(
            actor=actor,
            action=Action.SECRET_SET,
            target_type="projects.projectsecret",
            target_id=project.pk,
            target_repr=f"{project.name}: {name}",
            team_id=project.team_id,
            before={"name": name, "fingerprint": existing[name]} if name in existing else None,
            after={"name": name, "fingerprint": fingerprint},
        )


def _audit_team_change(
    project: Project, before: int | None, actor: AbstractBaseUser | None
) -> None:
    if before == project.team_id:
        return
    from apps.audit.services import Action, record

    record(
        actor=actor,
        action=Action.PROJECT_TEAM,
        target=project,
        team_id=project.team_id or before,
        before={"team": before},
        after={"team": project.team_id},
    )


def _check_secrets(set_secrets: Mapping[str, str]) -> None:
    for name, value in set_secrets.items():
        validation.validate_secret_name(name)
        if not value or "\x00" in value or len(value.encode("utf-8")) > MAX_SECRET_BYTES:
            raise ValidationError(
                {"secrets": [f"Secret {name}: the value must be 1 byte to 64 KiB of text."]}
            )


@transaction.atomic
def create_project(
    *,
    owner: AbstractBaseUser,
    values: Mapping[str, Any],
    set_secrets: Mapping[str, str] | None = None,
) -> Project:
    set_secrets = dict(set_secrets or {})
    _check_secrets(set_secrets)
    project = Project(owner=owner, **{k: v for k, v in values.items() if k in EDITABLE_FIELDS})
    _validate(project, secret_names=set_secrets)
    project.save()
    _apply_secret_changes(project, set_secrets, (), actor=owner)
    _audit_team_change(project, None, owner)
    return project


@transaction.atomic
def update_project(
    *,
    project: Project,
    values: Mapping[str, Any],
    set_secrets: Mapping[str, str] | None = None,
    delete_secrets: Iterable[str] = (),
    actor: AbstractBaseUser | None = None,
) -> Project:
    set_secrets = dict(set_secrets or {})
    delete = set(delete_secrets) - set(set_secrets)
    _check_secrets(set_secrets)
    team_before = Project.objects.filter(pk=project.pk).values_list("team_id", flat=True).first()
    for field, value in values.items():
        if field in EDITABLE_FIELDS:
            setattr(project, field, value)
    existing = set(project.secrets.values_list("name", flat=True))
    _validate(project, secret_names=(existing - delete) | set(set_secrets))
    project.save()
    _apply_secret_changes(project, set_secrets, delete, actor=actor)
    _audit_team_change(project, team_before, actor)
    return project


def archive_project(*, project: Project) -> Project:
    """Archived projects keep their runs and history but cannot launch new runs."""
    if project.archived_at is None:
        project.archived_at = timezone.now()
        project.save(update_fields=["archived_at", "updated_at"])
    return project


def restore_project(*, project: Project) -> Project:
    if project.archived_at is not None:
        project.archived_at = None
        project.save(update_fields=["archived_at", "updated_at"])
    return project


def project_secret_values(*, project_id: int) -> dict[str, str]:
    """Decrypted secrets; called only in the worker, at the moment a run needs them."""
    return {
        secret.name: crypto.decrypt(secret.ciphertext)
        for secret in ProjectSecret.objects.filter(project_id=project_id)
    }
