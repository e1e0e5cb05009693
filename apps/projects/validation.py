"""Rules for project values shared by the forms and the services (so both say the same thing)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from django.conf import settings
from django.core.exceptions import ValidationError

from apps.sandboxes import UnknownProvider, provider_class

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
SECRET_REF = re.compile(r"\$\{secret:([A-Za-z_][A-Za-z0-9_]*)\}")
# Docker reference: [registry[:port]/]name[:tag][@digest], lower-case name components.
IMAGE_REF = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
RESERVED_ENV = {"SANDBOX_EXEC_ID", "PATH", "HOME"}
# A project secret with this name is the project's own E2B API key (stored encrypted like any
# secret); without it, E2B runs use the server's settings.E2B_API_KEY.
E2B_KEY_SECRET = "E2B_API_KEY"  # noqa: S105 - a secret's name
DEFAULT_E2B_TEMPLATE = "base"
MAX_ENV_VARS = 100


def validate_image(value: str) -> None:
    if value and not IMAGE_REF.match(value):
        raise ValidationError(
            f"{value!r} is not a Docker image reference (for example python:3.12-slim or "
            "registry.example.com/team/image:tag)."
        )


def validate_provider(value: str) -> None:
    try:
        provider_class(value)
    except UnknownProvider as exc:
        raise ValidationError(str(exc)) from None


def validate_provider_ready(provider: str, *, secret_names: Iterable[str]) -> None:
    """E2B needs an API key: the server's, or the project's own secret."""
    if provider == "e2b" and not settings.E2B_API_KEY and E2B_KEY_SECRET not in set(secret_names):
        raise ValidationError(
            "E2B needs an API key: add a project secret named E2B_API_KEY (stored encrypted, "
            "never shown again), or ask the admin to set E2B_API_KEY for the server."
        )


def validate_env(env: Mapping[str, str], *, secret_names: Iterable[str]) -> None:
    if not isinstance(env, Mapping):
        raise ValidationError("Environment variables must be NAME=value pairs.")
    if len(env) > MAX_ENV_VARS:
        raise ValidationError(f"At most {MAX_ENV_VARS} environment variables.")
    known = set(secret_names)
    for name, value in env.items():
        if not ENV_NAME.match(name):
            raise ValidationError(f"{name!r} is not a valid variable name (letters, digits, _).")
        if name in RESERVED_ENV:
            raise ValidationError(f"{name} is set by the sandbox and cannot be overridden.")
        if not isinstance(value, str) or "\x00" in value:
            raise ValidationError(f"The value of {name} must be text.")
        for ref in SECRET_REF.findall(value):
            if ref not in known:
                raise ValidationError(
                    f"{name} refers to secret {ref}, which this project does not have."
                )
        if SECRET_REF.search(value) and not SECRET_REF.fullmatch(value):
            raise ValidationError(
                f"{name}: a secret reference must be the whole value (NAME=${{secret:NAME}})."
            )


def validate_capture_patterns(patterns: list[str]) -> None:
    if not isinstance(patterns, list) or len(patterns) > 50:
        raise ValidationError("At most 50 capture patterns, one per line.")
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern or "\x00" in pattern:
            raise ValidationError("Capture patterns must be non-empty text.")
        if pattern.startswith("/") or ".." in pattern.split("/"):
            raise ValidationError(
                f"{pattern!r}: patterns are relative to the workspace and cannot contain '..'."
            )


def validate_secret_name(name: str) -> None:
    if not SECRET_NAME.match(name):
        raise ValidationError(
            f"{name!r} is not a valid secret name (letters, digits and _, not starting with "
            "a digit)."
        )


def parse_env_text(text: str) -> dict[str, str]:
    """``NAME=value`` lines (blank lines and # comments ignored) into a dict."""
    env: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise ValidationError(f"Line {number}: expected NAME=value, got {line[:40]!r}.")
        name = name.strip()
        if name in env:
            raise ValidationError(f"Line {number}: {name} is set twice.")
        env[name] = value
    return env


def env_to_text(env: Mapping[str, str]) -> str:
    return "\n".join(f"{name}={value}" for name, value in env.items())


def parse_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]
