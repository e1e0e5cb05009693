"""Reachability of the sandbox engines, for health checks and start-up diagnostics."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import docker.errors

import docker


@dataclass(frozen=True)
class EngineStatus:
    ok: bool
    message: str
    latency_ms: float | None = None
    version: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def docker_host_description() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def docker_status(*, timeout: float = 3.0) -> EngineStatus:
    started = time.perf_counter()
    try:
        client = docker.from_env(timeout=timeout)
        try:
            version = client.version().get("Version")
        finally:
            client.close()
    except docker.errors.DockerException as exc:
        return EngineStatus(
            ok=False,
            message=(
                f"Docker Engine at {docker_host_description()} does not answer: start dockerd "
                f"or set DOCKER_HOST ({str(exc).splitlines()[0][:160]})"
            ),
        )
    return EngineStatus(
        ok=True,
        message="ok",
        latency_ms=round((time.perf_counter() - started) * 1000, 1),
        version=version,
    )
