"""Fixtures of the attack suite (tests/security): hostile runs through the users' code path.

* ``attack_worker`` - one real Celery worker process for the session (tests/runs/workers.py), with
  ``SANDBOX_VERIFY_CONFORMANCE=1``: every sandbox it starts is checked by
  ``apps.sandboxes.conformance`` (static flags + in-container probe) *before* the run's first
  command, and refused if it is not hardened. Its environment holds real-looking server secrets
  (``SERVER_SECRETS``) so a leak into a sandbox is detectable.
* ``attacks`` - launches runs (project + ``services.start_run``) on that worker and, when the
  test ends, asserts for every run it launched: terminal state, the conformance check passed for
  its sandbox (from the worker's log: it cannot be forgotten by a test), and its container and
  workspace volume are gone (no orphan).
* In-process paths (``execute_run`` in the test process) get the same check through the
  environment variable, which ``_conformance_in_process`` sets for every test here.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import docker
from apps.runs import services
from apps.runs.models import Run
from apps.sandboxes.docker import LABEL_ID, VERIFY_CONFORMANCE_VAR
from tests.projects.factories import make_project, make_user

# Values the worker holds that must never reach a sandbox; random per session so a match
# can only be a leak. (SECRET_KEY, DATABASE_URL and REDIS_URL are the worker's real ones:
# tests/conftest.py child_environment.)
SERVER_SECRETS = {
    "ANTHROPIC_API_KEY": f"sk-ant-api03-attack-{secrets.token_hex(12)}",
    "E2B_API_KEY": f"e2b_attack_{secrets.token_hex(12)}",
    "AWS_SECRET_ACCESS_KEY": f"aws-attack-{secrets.token_hex(12)}",
}
# A loopback port nothing listens on: with a key set, the worker's sweeper lists E2B sandboxes,
# and that must fail at once on this host instead of trying a remote API.
CLOSED_LOOPBACK_URL = "http://127.0.0.1:9"


@pytest.fixture(scope="session")
def attack_worker(
    django_db_setup, django_db_blocker, redis_server, docker_engine, tmp_path_factory
):
    from tests.runs.workers import runs_worker

    with (
        django_db_blocker.unblock(),
        runs_worker(
            tmp_path_factory.mktemp("attack-worker"),
            anthropic_url=CLOSED_LOOPBACK_URL,
            concurrency=4,
            E2B_API_URL=CLOSED_LOOPBACK_URL,
            RUN_STATS_INTERVAL_MS="1000",
            **{VERIFY_CONFORMANCE_VAR: "1"},
            **SERVER_SECRETS,
        ) as process,
    ):
        yield process


@pytest.fixture(autouse=True)
def _conformance_in_process(monkeypatch) -> None:
    monkeypatch.setenv(VERIFY_CONFORMANCE_VAR, "1")


def py(code: str) -> str:
    """One run command (commands are one per line) that runs the Python program ``code``."""
    encoded = base64.b64encode(code.encode()).decode()
    return f"python3 -c \"exec(__import__('base64').b64decode('{encoded}'))\""


def parse_facts(lines: list[str]) -> dict:
    """``fact <name> <json>`` lines of a probe run; a fact the log split over two lines (it
    keeps whole lines, but tolerate it) is joined back."""
    facts: dict = {}
    joined: list[str] = []
    for line in lines:
        if line.startswith("fact ") or not joined:
            joined.append(line)
        elif line != "probe done":
            joined[-1] += line
    for line in joined:
        if line.startswith("fact "):
            _, name, value = line.split(" ", 2)
            try:
                facts[name] = json.loads(value)
            except ValueError as exc:
                raise AssertionError(f"unreadable fact line: {line[:500]!r}") from exc
    return facts


def wait_done(run_ids: list[int], timeout: float) -> dict[int, Run]:
    deadline = time.monotonic() + timeout
    pending = set(run_ids)
    while pending and time.monotonic() < deadline:
        for run in Run.objects.filter(pk__in=pending):
            if run.is_terminal:
                pending.discard(run.pk)
        if pending:
            time.sleep(0.25)
    runs = Run.objects.in_bulk(run_ids)
    assert not pending, {pk: runs[pk].status for pk in pending}
    return {pk: runs[pk] for pk in run_ids}


def sandbox_resources(sandbox_id: str) -> dict[str, list[str]]:
    client = docker.from_env()
    try:
        label = f"{LABEL_ID}={sandbox_id}"
        return {
            "containers": [
                c.name for c in client.containers.list(all=True, filters={"label": label})
            ],
            "volumes": [v.name for v in client.volumes.list(filters={"label": label})],
        }
    finally:
        client.close()


@dataclass
class Attacks:
    worker: Any
    user: Any = None
    launched: list[int] = field(default_factory=list)

    def project(self, **values: Any):
        if self.user is None:
            self.user = make_user()
        values.setdefault("memory_mb", 128)
        values.setdefault("timeout_seconds", 60)
        return make_project(self.user, **values)

    def launch(
        self, commands: str, *, project=None, overrides: dict | None = None, **project_values: Any
    ) -> Run:
        project = project or self.project(**project_values)
        run = services.start_run(
            project=project, user=project.owner, task=commands, overrides=overrides or {}
        )
        self.launched.append(run.pk)
        return run

    def wait(self, *runs: Run, timeout: float = 90) -> list[Run]:
        done = wait_done([run.pk for run in runs], timeout)
        return [done[run.pk] for run in runs]

    def verify(self) -> None:
        """Every launched run ended, its sandbox was proven hardened, and nothing is left."""
        if not self.launched:
            return
        runs = wait_done(self.launched, timeout=60)
        log = self.worker.log()
        for run in runs.values():
            if not run.sandbox_id:
                continue  # never got a sandbox (e.g. refused at launch)
            assert f"sandbox {run.sandbox_id} passed the conformance check" in log, (
                f"run {run.pk}: no conformance check recorded for {run.sandbox_id}"
            )
            left: dict[str, list[str]] = {}
            for _ in range(40):  # removal finishes right after the final state is written
                left = sandbox_resources(run.sandbox_id)
                if not any(left.values()):
                    break
                time.sleep(0.25)
            assert not any(left.values()), f"run {run.pk} left {left}"


@pytest.fixture
def attacks(attack_worker, transactional_db) -> Iterator[Attacks]:
    helper = Attacks(worker=attack_worker)
    yield helper
    helper.verify()
