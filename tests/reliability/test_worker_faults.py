"""Worker death and duplicate delivery, across real Celery worker processes.

The in-process duplicate (three deliveries to one worker) is tests/runs/test_tasks.py; here the
deliveries land in different processes, the worker is SIGKILLed with its pool, and Redis
redelivers a task that is still running.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter

import pytest
import redis
from django.conf import settings

from apps.runs.models import Run, RunEvent
from apps.runs.selectors import log_lines
from apps.runs.tasks import execute_run_task
from tests.reliability.conftest import (
    SandboxWatch,
    assert_gap_free,
    beat,
    chaos_worker,
    kill_process_group,
    launch,
    results_in,
    sandbox_prefix,
    wait_done,
    wait_for,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker, pytest.mark.slow]
S = Run.Status

LEASE_SECONDS = 10  # the product's minimum: a dead worker's run is noticed within ~15 s
SWEEP_SECONDS = 2  # beat's interval for the sweeper in these tests
EXPIRY_GRACE = 5  # services.expire_stale_runs waits this long past the lease
REMOVAL_ALLOWANCE = 15  # docker stop's grace (PID 1 ignores SIGTERM) on a busy engine
STEADY = 'i=0; while true; do i=$((i+1)); echo "line $i"; sleep 0.01; done'


def forget_queue(queue: str) -> None:
    """Drop a test queue and the unacknowledged messages a killed worker left for it, so the
    shared Redis does not redeliver them to nobody hours later."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        client.delete(queue)
        for key, index in (("unacked", "unacked_index"),):
            for tag, payload in client.hgetall(key).items():
                with_routing = json.loads(payload)
                if with_routing[-1] == queue:
                    client.hdel(key, tag)
                    client.zrem(index, tag)
    finally:
        client.close()


def test_a_worker_killed_mid_run_crashes_the_run_keeps_its_log_and_loses_its_sandbox(
    project, owner, worker_pair, tmp_path
):
    sweeper = worker_pair[0]  # another worker of the same host: it reaps the victim's sandboxes
    victim_queue = ""
    try:
        with (
            beat(tmp_path / "beat", queue=sweeper.queue, sweep_seconds=SWEEP_SECONDS),
            chaos_worker(
                tmp_path,
                name="victim",
                owner=sweeper.owner,
                RUN_LEASE_SECONDS=str(LEASE_SECONDS),
            ) as victim,
        ):
            victim_queue = victim.queue
            run = launch(project, owner, STEADY, queue=victim.queue)
            with SandboxWatch(sandbox_prefix(run)) as watch:
                run = wait_for(
                    run.pk, lambda r: r.status == S.RUNNING and r.log_lines >= 100, 60, "running"
                )
                before = [line.text for line in log_lines(run=run, first=1, last=run.log_lines)]
                kill_process_group(victim)
                killed = time.monotonic()

                run = wait_done(run.pk, timeout=LEASE_SECONDS + EXPIRY_GRACE + 30)
                crashed_after = time.monotonic() - killed
                while (watch.containers() or watch.existing_volumes()) and (
                    time.monotonic() - killed < crashed_after + 30
                ):
                    time.sleep(0.1)  # the volume goes right after the container
                gone_after = time.monotonic() - killed
                assert watch.containers() == []
                volumes_left = watch.existing_volumes()
            sweep_report = rf"sweep: {{'crashed': \[([\d, ]*\b)?{run.pk}\b"
            deadline = time.monotonic() + 10
            while not re.search(sweep_report, sweeper.log()) and time.monotonic() < deadline:
                time.sleep(0.1)  # the sweep's log line may trail the removal
            sweeper_log = sweeper.log()
    finally:
        if victim_queue:
            forget_queue(victim_queue)

    assert (run.status, run.end_reason) == (S.CRASHED, "crashed"), run.error_message
    assert "lease expired" in run.error_message
    # Noticed by the lease, not by luck: within lease + grace + one sweep (+ slack for the
    # beat's first tick and a loaded machine).
    assert crashed_after <= LEASE_SECONDS + EXPIRY_GRACE + SWEEP_SECONDS + 10, crashed_after
    # The sweep that ends the run also reaps its sandbox (the removal itself takes the engine's
    # stop grace, 5 s, and more on a loaded host: hence the allowance).
    assert re.search(
        rf"{sweep_report}[^\n]*'reaped': \[[^\]]*'{sandbox_prefix(run)}1'", sweeper_log
    )
    assert gone_after - crashed_after <= SWEEP_SECONDS + REMOVAL_ALLOWANCE, (
        crashed_after,
        gone_after,
    )
    assert watch.volumes and volumes_left == []
    assert watch.max_live == 1 and watch.names == {f"{sandbox_prefix(run)}1"}
    assert re.search(sweep_report, sweeper_log), sweeper_log[-3000:]

    # Every line recorded before the kill is still there, in order, and the log is whole.
    after = [line.text for line in log_lines(run=run, first=1, last=run.log_lines)]
    assert after[: len(before)] == before
    assert after == [f"line {i}" for i in range(1, len(after) + 1)]
    assert_gap_free(run)
    last = RunEvent.objects.filter(run=run).order_by("-seq").first()
    assert (last.type, last.data["status"], last.data["reason"]) == ("status", "crashed", "crashed")


def test_one_message_delivered_to_two_workers_at_once_starts_one_sandbox(
    project, owner, worker_pair
):
    a, b = worker_pair
    seen = {"a": len(results_in(a.log())), "b": len(results_in(b.log()))}
    parking = f"test-parked-{uuid.uuid4().hex[:8]}"  # no worker: the launch's own message waits
    try:
        run = launch(
            project, owner, "for i in $(seq 1 300); do echo $i; done; sleep 1", queue=parking
        )
        with SandboxWatch(sandbox_prefix(run)) as watch:
            task_id = str(uuid.uuid4())
            for queue in (a.queue, b.queue):  # the same message, twice, back to back
                execute_run_task.apply_async(args=[run.pk], queue=queue, task_id=task_id)
            run = wait_done(run.pk)

            def answers() -> dict[str, list[str]]:
                return {
                    "a": results_in(a.log())[seen["a"] :],
                    "b": results_in(b.log())[seen["b"] :],
                }

            deadline = time.monotonic() + 20
            while len(answers()["a"] + answers()["b"]) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
    finally:
        forget_queue(parking)

    got = answers()
    # Each worker really got the message; one ran it, the other found it claimed.
    assert sorted(got["a"] + got["b"]) == ["not-claimed", "succeeded"], got
    assert got["a"] and got["b"], got
    assert run.status == S.SUCCEEDED and run.attempt == 1
    assert watch.names == {f"{sandbox_prefix(run)}1"} and watch.max_live == 1
    assert_gap_free(run)
    kinds = Counter(RunEvent.objects.filter(run=run).values_list("type", flat=True))
    assert kinds["command_started"] == 1 and kinds["run_finished"] == 1
    assert [line.text for line in log_lines(run=run, first=1, last=1000)] == [
        str(i) for i in range(1, 301)
    ]


def test_a_redelivery_after_the_visibility_timeout_sees_the_live_lease_and_exits(
    project, owner, sandbox_owner, tmp_path
):
    visibility = 3
    with chaos_worker(
        tmp_path,
        name="short-visibility",
        owner=sandbox_owner,
        concurrency=3,
        CELERY_VISIBILITY_TIMEOUT_SECONDS=str(visibility),
    ) as worker:
        run = launch(
            project,
            owner,
            "for i in $(seq 1 12); do echo tick $i; sleep 1; done",
            queue=worker.queue,
        )
        with SandboxWatch(sandbox_prefix(run)) as watch:
            run = wait_done(run.pk, timeout=90)
        time.sleep(1)  # the last redelivery, if any, answers
        log = worker.log()

    received = re.findall(r"Task runs\.execute\[([^\]]+)\] received", log)
    results = results_in(log)
    # Redis handed the running task out again (the visibility timeout is 4x shorter than the
    # run), and every extra delivery found the lease alive and exited.
    assert len(received) >= 2 and len(set(received)) == 1, received
    assert results.count("succeeded") == 1 and "not-claimed" in results, results
    assert set(results) == {"succeeded", "not-claimed"}, results
    assert run.status == S.SUCCEEDED and run.attempt == 1
    assert watch.names == {f"{sandbox_prefix(run)}1"} and watch.max_live == 1
    assert_gap_free(run)
    assert [line.text for line in log_lines(run=run, first=1, last=100)] == [
        f"tick {i}" for i in range(1, 13)
    ]
