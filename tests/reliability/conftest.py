"""Fault-injection tests: real worker processes, daphne, Docker, Redis and the test database.

Everything here runs against real parts (tests/conftest.py: start_worker/stop_worker,
child_environment; tests/runs/workers.py: runs_worker); faults are injected by killing
processes, redelivering messages and dropping sockets, never by mocking the product.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import docker
from apps.runs import services
from apps.runs.models import Run, RunEvent
from apps.sandboxes.docker import LABEL_VOLUME
from tests.conftest import REPO_ROOT, WorkerProcess, child_environment

# The real server for the socket tests: daphne + its worker + Chromium, as tests/e2e runs them.
from tests.e2e.conftest import anthropic_server, browser, e2e_worker, live_url, page  # noqa: F401
from tests.projects.factories import make_project, make_user
from tests.runs.workers import leftover_sandboxes, reap_all, runs_worker

# Script runs only: the workers never call the model API, but runs_worker wants an address.
NO_MODEL_API = "http://127.0.0.1:9"


@pytest.fixture(autouse=True)
def keep_the_default_queue():
    """Workers these tests start (session ones included) must not become the queue that later
    tests' launches go to: every launch here names its queue."""
    from sandboxweb.celery import app

    previous = app.conf.task_default_queue
    yield
    app.conf.task_default_queue = previous


@pytest.fixture
def owner(db):
    return make_user("chaos-owner")


@pytest.fixture
def project(owner):
    return make_project(owner, name="Chaos", timeout_seconds=300)


def launch(project, user, commands: str, *, queue: str | None = None) -> Run:
    """A script run, enqueued (after the commit) on ``queue`` - the way a web process whose
    CELERY_QUEUE names that queue enqueues it."""
    from sandboxweb.celery import app

    previous = app.conf.task_default_queue
    if queue:
        app.conf.task_default_queue = queue
    try:
        return services.start_run(project=project, user=user, task=commands, overrides={})
    finally:
        app.conf.task_default_queue = previous


def results_in(log: str, task: str = "runs.execute") -> list[str]:
    """The return values Celery logged for ``task`` ("... succeeded in 1.2s: 'not-claimed'")."""
    return re.findall(rf"Task {re.escape(task)}\[[^\]]+\] succeeded in [\d.]+s: '([^']*)'", log)


def wait_for(run_id: int, condition, timeout: float = 60, what: str = "") -> Run:
    deadline = time.monotonic() + timeout
    run = Run.objects.get(pk=run_id)
    while time.monotonic() < deadline:
        run = Run.objects.get(pk=run_id)
        if condition(run):
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not become {what}: {run.status} {run.error_message}")


def wait_done(run_id: int, timeout: float = 120) -> Run:
    return wait_for(run_id, lambda r: r.is_terminal, timeout, "terminal")


def event_seqs(run: Run) -> list[int]:
    return list(RunEvent.objects.filter(run=run).order_by("seq").values_list("seq", flat=True))


def assert_gap_free(run: Run) -> None:
    """Every seq from 1 to last_seq exactly once (UNIQUE(run, seq) forbids repeats; a hole would
    mean an event lost between numbering and writing)."""
    assert event_seqs(run) == list(range(1, run.last_seq + 1))


@contextlib.contextmanager
def chaos_worker(
    log_dir: Path, *, name: str, owner: str, concurrency: int = 2, **extra_env: str
) -> Iterator[WorkerProcess]:
    """A runs worker (own queue) whose sandboxes carry ``owner``: workers sharing an owner
    can reap each other's orphans, as workers on one host do in production. It does not become
    the default queue of this process (tests here name the queue of every launch), so session
    workers of other test packages keep receiving their own runs."""
    from sandboxweb.celery import app

    (log_dir / name).mkdir(parents=True, exist_ok=True)
    default_queue = app.conf.task_default_queue
    with runs_worker(
        log_dir / name,
        anthropic_url=NO_MODEL_API,
        concurrency=concurrency,
        SANDBOX_OWNER=owner,
        **extra_env,
    ) as worker:
        app.conf.task_default_queue = default_queue
        worker.owner = owner  # type: ignore[attr-defined]
        yield worker


def assert_no_sandboxes_left(owner: str) -> None:
    left = leftover_sandboxes(owner)
    if left:
        reap_all(owner)
        raise AssertionError(f"sandboxes left behind: {left}")


@pytest.fixture(scope="session")
def worker_pair(
    django_db_setup, django_db_blocker, redis_server, docker_engine, tmp_path_factory
) -> Iterator[tuple[WorkerProcess, WorkerProcess]]:
    """Two workers on two queues sharing one sandbox owner (two hosts' workers, or two pools of
    one host). Shared by the modules of this package: starting a worker costs seconds."""
    owner = f"pytest-chaos-{uuid.uuid4().hex[:8]}"
    log_dir = tmp_path_factory.mktemp("chaos-workers")
    with (
        django_db_blocker.unblock(),
        # One pool process each: every test here gives a worker one run at a time, and a
        # smaller pool starts faster on a busy machine.
        chaos_worker(log_dir, name="a", owner=owner, concurrency=1) as a,
        chaos_worker(log_dir, name="b", owner=owner, concurrency=1) as b,
    ):
        yield a, b
    assert_no_sandboxes_left(owner)


def kill_process_group(worker: WorkerProcess) -> None:
    """SIGKILL the worker's main process and its pool children at once (start_worker puts them
    in a session of their own): no signal handler, no cleanup, no ack."""
    os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)


@pytest.fixture
def sandbox_owner() -> Iterator[str]:
    """A sandbox owner of the test's own (its workers' sandboxes), checked for leaks after."""
    owner = f"pytest-chaos-{uuid.uuid4().hex[:8]}"
    yield owner
    assert_no_sandboxes_left(owner)


@contextlib.contextmanager
def beat(tmp_path: Path, *, queue: str, sweep_seconds: int, **extra_env: str) -> Iterator[None]:
    """``celery beat`` as the Procfile runs it, sending the sweep to ``queue`` every
    ``sweep_seconds`` (RUN_SWEEP_SECONDS)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    log_path = tmp_path / "beat.log"
    with log_path.open("wb") as handle:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "--app",
                "sandboxweb",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(tmp_path / "celerybeat-schedule"),
            ],
            cwd=REPO_ROOT,
            env=child_environment(
                CELERY_QUEUE=queue, RUN_SWEEP_SECONDS=str(sweep_seconds), **extra_env
            ),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


class SandboxWatch:
    """Polls the Docker Engine for one run's sandboxes (any attempt) in a thread of its own.

    ``max_live``: the most containers of the run running at one time; ``names``/``volumes``:
    every container and workspace volume seen."""

    def __init__(self, sandbox_prefix: str, interval: float = 0.1) -> None:
        self.prefix = sandbox_prefix
        self.interval = interval
        self.max_live = 0
        self.names: set[str] = set()
        self.volumes: set[str] = set()
        self._stop = threading.Event()
        self._client = docker.from_env()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> SandboxWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._client.close()

    def containers(self) -> list[dict]:
        """One list call (the high-level client inspects each container, racing removals)."""
        found = self._client.api.containers(all=True, filters={"name": self.prefix})
        return [
            c for c in found if (c.get("Names") or ["/"])[0].lstrip("/").startswith(self.prefix)
        ]

    def _loop(self) -> None:
        while not self._stop.is_set():
            live = 0
            for container in self.containers():
                self.names.add(container["Names"][0].lstrip("/"))
                labels = container.get("Labels") or {}
                if labels.get(LABEL_VOLUME):
                    self.volumes.add(labels[LABEL_VOLUME])
                if container.get("State") in ("running", "created", "restarting"):
                    live += 1
            self.max_live = max(self.max_live, live)
            self._stop.wait(self.interval)

    def existing_volumes(self) -> list[str]:
        names = []
        for volume in self.volumes:
            with contextlib.suppress(docker.errors.NotFound):
                names.append(self._client.volumes.get(volume).name)
        return names


def sandbox_prefix(run: Run) -> str:
    from apps.runs.execution import sandbox_id_for

    return sandbox_id_for(run.pk, 0)[: -len("0")]
