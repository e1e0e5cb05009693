"""A real Celery worker for run tests: its own queue, sandbox owner and loopback model API.

The worker is a subprocess seeing the test database (tests/conftest.py: start_worker). Its
sandboxes carry an owner label of their own, so its start-up sweep and the leak check at the end
touch nothing else on this Docker Engine.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
from apps.sandboxes import SandboxManager
from apps.sandboxes.docker import APP_NAME, LABEL_APP, LABEL_OWNER
from tests.conftest import WorkerProcess, start_worker, stop_worker


def leftover_sandboxes(owner: str) -> list[str]:
    client = docker.from_env()
    try:
        labels = [f"{LABEL_APP}={APP_NAME}", f"{LABEL_OWNER}={owner}"]
        return [c.name for c in client.containers.list(all=True, filters={"label": labels})]
    finally:
        client.close()


def reap_all(owner: str) -> None:
    with SandboxManager(owner=owner) as janitor:
        janitor.reap_orphans(is_live=lambda labels: False, grace_seconds=0)


@contextlib.contextmanager
def runs_worker(
    log_dir: Path, *, anthropic_url: str, concurrency: int = 3, **extra_env: str
) -> Iterator[WorkerProcess]:
    from sandboxweb.celery import app

    tag = uuid.uuid4().hex[:8]
    queue, owner = f"test-runs-{tag}", f"pytest-runs-{tag}"
    previous = app.conf.task_default_queue
    app.conf.task_default_queue = queue
    environment = {
        "SANDBOX_OWNER": owner,
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": anthropic_url,
        "RUN_STATS_INTERVAL_MS": "500",
        **extra_env,
    }
    worker = start_worker(
        queue=queue, log_dir=log_dir, concurrency=concurrency, extra_env=environment
    )
    worker.owner = owner  # type: ignore[attr-defined]
    try:
        yield worker
    finally:
        stop_worker(worker)
        app.conf.task_default_queue = previous
        left = leftover_sandboxes(owner)
        if left:
            reap_all(owner)
            raise AssertionError(f"runs left sandboxes behind: {left}")
