"""A run's effective settings: the project's, overridden per run, clamped to the admin's limits.

The snapshot is plain JSON stored on the run (``Run.config``). It never holds secret values: env
entries that need a secret hold a reference (``${secret:NAME}``) that the executor resolves in
its private copy inside the worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError

from apps.projects import limits, validation
from apps.projects.models import Project

# What a launch may override, and how to read it from form/JSON input.
OVERRIDABLE: dict[str, type] = {
    "image": str,
    "cpu_cores": float,
    "memory_mb": int,
    "disk_mb": int,
    "timeout_seconds": int,
    "network_mode": str,
    "log_limit_mb": int,
    "model": str,
    "max_turns": int,
    "max_tokens_total": int,
    "max_cost_usd": float,
}


def clean_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Keep known keys with non-empty values, typed; unknown keys are refused."""
    unknown = set(overrides) - set(OVERRIDABLE)
    if unknown:
        raise ValidationError(f"Unknown override(s): {', '.join(sorted(unknown))}.")
    cleaned: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None or value == "":
            continue
        try:
            cleaned[key] = OVERRIDABLE[key](value)
        except (TypeError, ValueError):
            raise ValidationError({key: [f"{value!r} is not a valid {key}."]}) from None
    if "image" in cleaned:
        validation.validate_image(cleaned["image"])
    if cleaned.get("network_mode", "none") not in Project.NetworkMode.values:
        raise ValidationError({"network_mode": ["Unknown network mode."]})
    for key in ("max_tokens_total", "max_cost_usd"):
        if key in cleaned and cleaned[key] <= 0:
            raise ValidationError({key: ["Must be more than zero."]})
    return cleaned


def effective_config(*, project: Project, kind: str, overrides: Mapping[str, Any]) -> dict:
    values: dict[str, Any] = {
        "kind": kind,
        "project_name": project.name,
        "provider": project.provider,
        "image": project.image_or_default,
        "cpu_cores": project.cpu_cores,
        "memory_mb": project.memory_mb,
        "disk_mb": project.disk_mb,
        "timeout_seconds": project.timeout_seconds,
        "network_mode": project.network_mode,
        "env": dict(project.env),
        "log_limit_mb": project.log_limit_mb,
        "capture_patterns": list(project.capture_patterns),
        "system_prompt": project.system_prompt,
        "model": project.model,
        "max_turns": project.max_turns,
        "max_tokens_total": project.max_tokens_total,
        "max_cost_usd": float(project.max_cost_usd) if project.max_cost_usd is not None else None,
    }
    values.update(clean_overrides(overrides))
    clamped = limits.clamp(values)
    return {**clamped.values, "clamp_notes": clamped.notes}


def reclamp(config: Mapping[str, Any]) -> dict:
    """The worker's second clamp: today's limits win over the ones at launch."""
    clamped = limits.clamp(dict(config))
    notes = list(config.get("clamp_notes") or []) + clamped.notes
    return {**clamped.values, "clamp_notes": notes}
