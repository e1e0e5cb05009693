"""Fixtures for the real parts the suite runs against: Docker Engine, Redis, Celery workers.

A missing engine or server is a test *error* with the fix in its message, never a skip: CI
(`.ci/run`) starts all of them, and `make test` does too through `manage.py bootstrap`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from django.conf import settings

from apps.sandboxes.engine import docker_status

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def generous_api_rate_limit(settings):
    """Tests that are not about the API rate limits must never hit them: the counters live in
    Redis for minutes, so bad-token requests of one test (in random order) would throttle the
    next test's requests from the same address. Tests about the limits lower them again."""
    settings.API_RATE_LIMIT_REQUESTS = 100_000
    settings.API_AUTH_FAILURE_LIMIT_REQUESTS = 100_000


@pytest.fixture(scope="session")
def docker_engine() -> None:
    deadline = time.monotonic() + 30
    status = docker_status()
    while not status.ok and time.monotonic() < deadline:
        time.sleep(0.5)
        status = docker_status()
    if not status.ok:
        pytest.fail(f"{status.message} (.ci/run and `make test` start it)", pytrace=False)


@pytest.fixture(scope="session")
def redis_server() -> str:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {settings.REDIS_URL} does not answer: {exc}", pytrace=False)
    finally:
        client.close()
    return settings.REDIS_URL


def database_url_for(settings_dict: dict) -> str:
    """The DATABASE_URL a child process needs to reach the database this process uses."""
    engine = settings_dict["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{Path(settings_dict['NAME']).resolve()}"
    user = quote(settings_dict.get("USER") or "", safe="")
    password = quote(settings_dict.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"


def child_environment(**extra: str) -> dict[str, str]:
    from django.db import connection

    environment = dict(os.environ)
    environment.update(
        DJANGO_SETTINGS_MODULE="sandboxweb.settings",
        DATABASE_URL=database_url_for(connection.settings_dict),
        REDIS_URL=settings.REDIS_URL,
        SECRET_KEY=settings.SECRET_KEY,
        PYTHONUNBUFFERED="1",
    )
    environment.update(extra)
    return environment


@dataclass
class WorkerProcess:
    queue: str
    hostname: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_worker(
    *, queue: str, log_dir: Path, concurrency: int = 2, extra_env: dict[str, str] | None = None
) -> WorkerProcess:
    from sandboxweb.celery import app

    hostname = f"test-{queue}@%h"
    log_path = log_dir / f"worker-{queue}.log"
    handle = log_path.open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "--app",
            "sandboxweb",
            "worker",
            "--loglevel",
            "INFO",
            "--queues",
            queue,
            "--hostname",
            hostname,
            "--concurrency",
            str(concurrency),
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=REPO_ROOT,
        env=child_environment(CELERY_QUEUE=queue, **(extra_env or {})),
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    worker = WorkerProcess(queue=queue, hostname=hostname, process=process, log_path=log_path)
    deadline = time.monotonic() + 180  # an upper bound on a hang; a busy 2-core host needs >60 s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"celery worker exited early:\n{worker.log()[-4000:]}")
        replies = app.control.ping(timeout=0.5)
        if any(name.startswith(f"test-{queue}@") for reply in replies for name in reply):
            return worker
    stop_worker(worker)
    raise RuntimeError(f"celery worker did not become ready:\n{worker.log()[-4000:]}")


def stop_worker(worker: WorkerProcess, *, kill: bool = False) -> None:
    if worker.process.poll() is None:
        if kill:
            worker.process.kill()
        else:
            worker.process.terminate()
        try:
            worker.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait(timeout=10)


@pytest.fixture(scope="session")
def celery_worker(
    django_db_setup, django_db_blocker, redis_server, tmp_path_factory
) -> Iterator[WorkerProcess]:
    """A real Celery worker process on a queue of its own, seeing the test database."""
    from sandboxweb.celery import app

    queue = f"test-{uuid.uuid4().hex[:8]}"
    previous_queue = app.conf.task_default_queue
    app.conf.task_default_queue = queue
    with django_db_blocker.unblock():
        worker = start_worker(queue=queue, log_dir=tmp_path_factory.mktemp("celery"))
    try:
        yield worker
    finally:
        stop_worker(worker)
        app.conf.task_default_queue = previous_queue
