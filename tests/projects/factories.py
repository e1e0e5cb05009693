"""Builders for the project and run tests (plain functions; fixtures wrap them)."""

from __future__ import annotations

import itertools
from typing import Any

from django.contrib.auth import get_user_model

from apps.projects import services as project_services
from apps.projects.models import Project

_counter = itertools.count(1)
PASSWORD = "correct-horse-battery-9"


def make_user(username: str | None = None, **extra: Any):
    username = username or f"user{next(_counter)}"
    return get_user_model().objects.create_user(username=username, password=PASSWORD, **extra)


def make_project(owner, **values: Any) -> Project:
    secrets = values.pop("secrets", None)
    defaults: dict[str, Any] = {
        "name": f"project-{next(_counter)}",
        "default_kind": "script",
        "memory_mb": 256,
        "cpu_cores": 0.5,
        "disk_mb": 256,
        "timeout_seconds": 120,
        "default_commands": "echo hello",
    }
    defaults.update(values)
    return project_services.create_project(owner=owner, values=defaults, set_secrets=secrets)
