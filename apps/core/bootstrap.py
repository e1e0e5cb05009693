"""First-start chores for `make run`: make sure every part answers, or say exactly how to fix it.

Each ensure_* returns a one-line status for the console and raises BootstrapError with one
sentence (the setting and the fix) when it cannot go on. Running it twice changes nothing.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.utils import OperationalError

from apps.sandboxes.engine import docker_host_description, docker_status

Say = Callable[[str], None]


class BootstrapError(Exception):
    pass


def _redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def ensure_database() -> str:
    connection = connections[DEFAULT_DB_ALIAS]
    try:
        connection.ensure_connection()
    except OperationalError as exc:
        first = (str(exc).strip().splitlines() or ["no answer"])[0]
        raise BootstrapError(
            f"The database in DATABASE_URL does not answer ({first}): start it, or unset "
            "DATABASE_URL to use the built-in SQLite file under var/."
        ) from exc
    return f"database: {connection.vendor} ok"


def ensure_redis(say: Say) -> str:
    url = settings.REDIS_URL
    if _redis_answers(url):
        return f"redis: {url} answers"
    if os.environ.get("REDIS_URL"):
        raise BootstrapError(
            f"Redis at REDIS_URL={url} does not answer: start it, or unset REDIS_URL to use a "
            "local redis-server."
        )
    server = shutil.which("redis-server")
    if server is None:
        raise BootstrapError(
            f"Redis at {url} does not answer and redis-server is not installed: install it "
            "(Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis) or "
            "set REDIS_URL to a running Redis."
        )
    parts = urlsplit(url)
    data_dir = settings.VAR_DIR / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    say(f"Starting redis-server on port {parts.port or 6379} (files under {data_dir}) ...")
    subprocess.run(
        [
            server,
            "--port",
            str(parts.port or 6379),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data_dir),
            "--daemonize",
            "yes",
            "--pidfile",
            str(data_dir / "redis.pid"),
            "--logfile",
            str(data_dir / "redis.log"),
        ],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    _wait_for(lambda: _redis_answers(url), seconds=10, what=f"redis-server on {url}")
    return f"redis: started local redis-server at {url}"


def ensure_docker(say: Say) -> str:
    status = docker_status()
    if status.ok:
        return f"docker: engine {status.version} at {docker_host_description()}"
    dockerd = shutil.which("dockerd")
    if os.environ.get("DOCKER_HOST") or dockerd is None or os.geteuid() != 0:
        hint = (
            "install Docker (Debian/Ubuntu: sudo apt-get install docker.io) and start it"
            if dockerd is None
            else "start it (sudo systemctl start docker, or run `make run` as root) or add "
            "your user to the docker group"
        )
        raise BootstrapError(f"{status.message}. To fix: {hint}.")
    log = settings.VAR_DIR / "dockerd.log"
    say(f"Starting dockerd (log: {log}) ...")
    with log.open("ab") as handle:
        subprocess.Popen(
            [dockerd],
            stdout=handle,
            stderr=handle,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _wait_for(lambda: docker_status().ok, seconds=60, what="dockerd")
    return f"docker: started dockerd ({docker_status().version})"


def ensure_sandbox_image(say: Say) -> str:
    from apps.sandboxes.images import ensure_image

    name = settings.SANDBOX_IMAGE
    if name == settings.DEFAULT_SANDBOX_IMAGE:
        return f"image: {ensure_image(alias=name, progress=say)}"
    return f"image: {ensure_image(name, progress=say)}"


def ensure_admin(say: Say) -> str:
    users = get_user_model()
    if users.objects.filter(is_superuser=True).exists():
        return "admin: an administrator account exists"
    password = secrets.token_urlsafe(12)
    users.objects.create_superuser(username="admin", email="", password=password)
    say("")
    say("  Created the first administrator account:")
    say("    username: admin")
    say(f"    password: {password}")
    say("  This password is shown only once; change it after logging in (Admin -> Users).")
    say("")
    return "admin: created user 'admin'"


def _wait_for(ready: Callable[[], bool], *, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.25)
    raise BootstrapError(f"{what} did not answer within {seconds:.0f} s; see its log under var/.")


def var_dir() -> Path:
    return settings.VAR_DIR
