"""Scale-out: two worker processes on two queues run two runs at the same time.

Each worker is what an operator starts on another host (docs/runs.md, "Adding workers"): the
same database and Redis, its own CELERY_QUEUE. Runs go to the queue of the web process that
launched them; here the test launches one onto each queue.
"""

from __future__ import annotations

import time

import pytest

from apps.runs.models import Run
from apps.runs.selectors import log_lines
from tests.reliability.conftest import assert_gap_free, launch, results_in, wait_done, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker, pytest.mark.slow]
S = Run.Status

LINES = 400
# ~4 s of steady output: long enough that the two runs must overlap if both workers work.
PRINTER = f'for i in $(seq 1 {LINES}); do echo "$i"; sleep 0.01; done'


def test_two_workers_on_two_queues_run_two_runs_at_the_same_time(project, owner, worker_pair):
    a, b = worker_pair
    seen = {"a": len(results_in(a.log())), "b": len(results_in(b.log()))}
    first = launch(project, owner, PRINTER, queue=a.queue)
    second = launch(project, owner, PRINTER, queue=b.queue)
    # Both running at one moment, seen from the database the page reads.
    wait_for(
        first.pk,
        lambda run: (
            run.status == S.RUNNING and Run.objects.filter(pk=second.pk, status=S.RUNNING).exists()
        ),
        timeout=90,
        what="running together with the second run",
    )
    first, second = wait_done(first.pk), wait_done(second.pk)

    assert (first.status, second.status) == (S.SUCCEEDED, S.SUCCEEDED)
    # Overlapping intervals recorded on the runs themselves.
    assert first.started_at < second.finished_at and second.started_at < first.finished_at
    overlap = min(first.finished_at, second.finished_at) - max(first.started_at, second.started_at)
    assert overlap.total_seconds() > 0
    # Each worker ran the run of its own queue (and only that one).
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (
        results_in(a.log())[seen["a"] :] and results_in(b.log())[seen["b"] :]
    ):
        time.sleep(0.1)  # the result line trails the state change
    assert results_in(a.log())[seen["a"] :] == ["succeeded"]
    assert results_in(b.log())[seen["b"] :] == ["succeeded"]
    for run in (first, second):
        assert run.attempt == 1
        assert_gap_free(run)
        assert [line.text for line in log_lines(run=run, first=1, last=LINES + 10)] == [
            str(i) for i in range(1, LINES + 1)
        ]
