"""Typed reading of environment variables that fails loudly, naming the variable.

A misconfigured deployment should refuse to start with one sentence that names the setting and
what a valid value looks like, never with a traceback from deep inside a driver.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class EnvError(ImproperlyConfigured):
    pass


def get_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def get_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise EnvError(f"{name}={raw!r} is not a boolean: use one of 1/0, true/false, yes/no, on/off.")


def get_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise EnvError(f"{name}={raw!r} is not a whole number.") from None
    if minimum is not None and value < minimum:
        raise EnvError(f"{name}={value} is too small: it must be at least {minimum}.")
    return value


def get_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def get_url(name: str, default: str, *, schemes: tuple[str, ...]) -> str:
    raw = os.environ.get(name)
    value = default if raw is None or not raw.strip() else raw.strip()
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise EnvError(
            f"{name}={value!r} is not a valid URL: it must start with "
            f"{' or '.join(s + '://' for s in schemes)}."
        )
    if parts.scheme not in {"unix", "npipe", "sqlite"} and not parts.hostname:
        raise EnvError(f"{name}={value!r} has no host name.")
    return value


def get_database_url(name: str, default: str) -> str:
    raw = os.environ.get(name)
    value = default if raw is None or not raw.strip() else raw.strip()
    scheme = urlsplit(value).scheme
    if scheme not in {"sqlite", "postgres", "postgresql", "pgsql"}:
        raise EnvError(
            f"{name}={value!r} is not a supported database URL: use "
            "postgres://USER:PASSWORD@HOST:5432/NAME or sqlite:////absolute/path.sqlite3."
        )
    return value


def secret_key(name: str, store: Path) -> str:
    """The SECRET_KEY from the environment, else one generated once and kept under var/."""
    value = get_str(name)
    if value:
        if len(value) < 32:
            raise EnvError(f"{name} is too short ({len(value)} characters); use at least 50.")
        return value
    if store.exists():
        return store.read_text().strip()
    store.parent.mkdir(parents=True, exist_ok=True)
    generated = secrets.token_urlsafe(50)
    # O_EXCL: two processes starting together must not overwrite each other's key.
    try:
        fd = os.open(store, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return store.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(generated)
    return generated
