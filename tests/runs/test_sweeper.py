"""The sweeper: runs whose worker died end as crashed; sandboxes without a live run are removed."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.utils import timezone

from apps.runs import execution, services
from apps.runs.models import Run
from apps.sandboxes import ResourceLimits, SandboxConfig, SandboxManager
from tests.projects.factories import make_project
from tests.runs.workers import leftover_sandboxes, reap_all

pytestmark = [pytest.mark.django_db, pytest.mark.docker]
S = Run.Status


@pytest.fixture
def owner(monkeypatch, docker_engine):
    name = f"pytest-sweep-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("SANDBOX_OWNER", name)
    execution.close_manager()
    yield name
    execution.close_manager()
    reap_all(name)


def claimed_run(project, user, status=S.RUNNING) -> Run:
    run = services.start_run(project=project, user=user, task="sleep 1", overrides={})
    run = services.claim_run(run_id=run.pk, lease_owner="dead-worker")
    if status != S.PROVISIONING:
        run = services.transition(run, to=status)
    return run


def test_sweep_crashes_dead_runs_and_reaps_exactly_their_sandboxes(owner, alice):
    project = make_project(alice)
    dead, alive = claimed_run(project, alice), claimed_run(project, alice)
    Run.objects.filter(pk=dead.pk).update(lease_expires_at=timezone.now() - dt.timedelta(minutes=2))
    small = ResourceLimits(memory_mb=64, cpu_cores=0.2, disk_mb=None, timeout_seconds=300)
    names = {
        "dead": execution.sandbox_id_for(dead.pk, 1),
        "alive": execution.sandbox_id_for(alive.pk, 1),
        "old-attempt": execution.sandbox_id_for(alive.pk, 7),
        "unknown-run": execution.sandbox_id_for(987654, 1),
        "not-a-run": f"scratch-{uuid.uuid4().hex[:6]}",
    }
    with SandboxManager(owner=owner, limits=small) as creator:
        for name in names.values():
            creator.provider("docker").create(SandboxConfig(sandbox_id=name), small).start()

    report = execution.sweep()

    assert report["crashed"] == [dead.pk]
    dead.refresh_from_db()
    assert dead.status == S.CRASHED and "lease expired" in dead.error_message
    assert sorted(report["reaped"]) == sorted(
        [names["dead"], names["old-attempt"], names["unknown-run"]]
    )
    assert sorted(leftover_sandboxes(owner)) == sorted([names["alive"], names["not-a-run"]])
