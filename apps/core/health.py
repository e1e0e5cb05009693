"""Health of the parts sandboxweb stands on: database, Redis, Docker Engine."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from django.conf import settings
from django.db import connection

from apps.sandboxes.engine import docker_status


@dataclass(frozen=True)
class Check:
    ok: bool
    message: str
    latency_ms: float | None = None
    version: str | None = None


def _timed(probe: Callable[[], str | None], failure: Callable[[Exception], str]) -> Check:
    started = time.perf_counter()
    try:
        version = probe()
    except Exception as exc:
        return Check(ok=False, message=failure(exc))
    return Check(
        ok=True,
        message="ok",
        latency_ms=round((time.perf_counter() - started) * 1000, 1),
        version=version,
    )


def check_database() -> Check:
    def probe() -> str | None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return (
            f"{connection.vendor} {connection.pg_version}"
            if connection.vendor == "postgresql"
            else connection.vendor
        )

    return _timed(
        probe,
        lambda exc: f"The database does not answer: check DATABASE_URL ({_first_line(exc)}).",
    )


def check_redis() -> Check:
    def probe() -> str | None:
        client = redis.Redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2
        )
        try:
            return client.info("server").get("redis_version")
        finally:
            client.close()

    return _timed(
        probe,
        lambda exc: (
            f"Redis at {settings.REDIS_URL} does not answer: start redis-server or set "
            f"REDIS_URL ({_first_line(exc)})."
        ),
    )


def check_docker() -> Check:
    status = docker_status()
    return Check(
        ok=status.ok, message=status.message, latency_ms=status.latency_ms, version=status.version
    )


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def run_checks() -> dict[str, Check]:
    return {"database": check_database(), "redis": check_redis(), "docker": check_docker()}
