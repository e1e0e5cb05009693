"""The admin's limits on what a run may ask for, and the one function that clamps to them.

Requested values are clamped on the server at launch and again in the worker (a project edited
or a limit lowered in between must not let a run exceed today's limit). A later issue moves the
maxima from settings into per-team rows; callers only use :func:`clamp` and :func:`maximum`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings

# field -> (minimum, type); maxima come from settings.RUN_LIMITS.
LIMIT_FIELDS: dict[str, tuple[float, type]] = {
    "cpu_cores": (0.1, float),
    "memory_mb": (64, int),
    "disk_mb": (64, int),
    "timeout_seconds": (10, int),
    "max_turns": (1, int),
    "log_limit_mb": (1, int),
}


def maximum(name: str) -> float:
    return settings.RUN_LIMITS[name]


def minimum(name: str) -> float:
    return LIMIT_FIELDS[name][0]


@dataclass(frozen=True)
class Clamped:
    values: dict[str, Any]
    notes: list[str]


def clamp(values: dict[str, Any]) -> Clamped:
    """``values`` with every limited field inside [minimum, admin maximum]; ``notes`` say what
    changed, in words the run page can show."""
    result = dict(values)
    notes: list[str] = []
    for name, (low, kind) in LIMIT_FIELDS.items():
        if name not in result or result[name] is None:
            continue
        requested = kind(result[name])
        high = kind(maximum(name))
        value = min(max(requested, kind(low)), high)
        if value != requested:
            notes.append(f"{name.replace('_', ' ')} {requested} clamped to {value} (admin limit)")
        result[name] = value
    return Clamped(values=result, notes=notes)
