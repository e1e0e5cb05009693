"""PostgreSQL unreachable for the worker mid-run.

The worker reaches the real PostgreSQL through a TCP proxy (tests/support/tcp_proxy.py); the test
process and every other helper's test connect directly, so only the worker sees the outage. A cut
resets every open connection and refuses new ones, as a database restart or a network partition
would.

- A short outage (below the worker's retry budget, ``RUN_LEASE_SECONDS``): the recorder retries
  its writes with backoff, the run finishes, every line is stored exactly once, seqs are gap-free
  and the log has a notice saying how long the database was away.
- A long outage (past the budget): the worker stops the sandbox and, once the database answers
  again, writes everything it kept and ends the run ``crashed`` / ``database_unavailable``.
"""

from __future__ import annotations

import time

import pytest
from django.db import connection

from apps.runs import services
from apps.runs.models import Run, RunEvent
from tests.conftest import database_url_for
from tests.projects.factories import make_project, make_user
from tests.reliability.test_redis_restart import (
    assert_gap_free,
    numbered_lines,
    wait_for_run,
    wait_until,
)
from tests.runs.workers import leftover_sandboxes
from tests.support.tcp_proxy import TcpProxy

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="a network outage between a worker and its database server needs PostgreSQL "
        "(SQLite is a local file); CI runs the suite on PostgreSQL",
    ),
]
S = Run.Status
BUDGET = 15  # RUN_LEASE_SECONDS of the worker: how long it retries before stopping a run


@pytest.fixture(scope="module")
def proxy(django_db_setup):
    settings_dict = connection.settings_dict
    with TcpProxy(settings_dict.get("HOST") or "127.0.0.1", settings_dict.get("PORT") or 5432) as p:
        yield p


@pytest.fixture(scope="module")
def worker(proxy, django_db_blocker, docker_engine, redis_server, tmp_path_factory):
    from tests.runs.workers import runs_worker

    with django_db_blocker.unblock():
        url = database_url_for(
            {**connection.settings_dict, "HOST": "127.0.0.1", "PORT": proxy.port}
        )
    with (
        django_db_blocker.unblock(),
        runs_worker(
            tmp_path_factory.mktemp("chaos-db"),
            anthropic_url="http://127.0.0.1:9",  # script runs only: never called
            concurrency=1,
            DATABASE_URL=url,
            RUN_LEASE_SECONDS=str(BUDGET),
            # The worker's sandbox names carry the test database's instance tag, as the test
            # process computes it (the proxy's port would give it another one).
            SANDBOXWEB_INSTANCE=_instance_tag(),
        ) as process,
    ):
        yield process


def _instance_tag() -> str:
    from apps.runs.execution import instance_tag

    return instance_tag()


def launch(project, user, command: str) -> Run:
    return services.start_run(project=project, user=user, task=command, overrides={})


def outage(proxy: TcpProxy, seconds: float) -> None:
    proxy.cut()
    try:
        time.sleep(seconds)
    finally:
        proxy.restore()


def test_a_short_database_outage_loses_and_duplicates_nothing(worker, proxy):
    user = make_user()
    project = make_project(user)
    lines = 120
    run = launch(project, user, f"for i in $(seq 1 {lines}); do echo line $i; sleep 0.1; done")
    wait_for_run(run.pk, lambda r: r.log_lines >= 10, 90, "10 lines recorded")
    cut_at = time.monotonic()
    outage(proxy, 5)
    run = wait_for_run(run.pk, lambda r: r.is_terminal, 90, "finished")

    assert (run.status, run.end_reason) == (S.SUCCEEDED, "completed"), run.error_message
    # Every line once, in order, although the worker's writes failed for 5 s.
    assert numbered_lines(run) == [f"line {i}" for i in range(1, lines + 1)]
    assert run.log_lines == lines
    kinds = [event.type for event in assert_gap_free(run)]
    assert kinds.count("run_finished") == 1
    notices = [
        e.data for e in RunEvent.objects.filter(run=run, type="notice") if e.data.get("kind")
    ]
    assert [n["kind"] for n in notices] == ["database_outage"]
    assert 3 <= notices[0]["seconds"] <= 5 + BUDGET, notices
    assert "writing" in worker.log() and "failed" in worker.log()
    statuses = list(
        RunEvent.objects.filter(run=run, type="status").values_list("data__status", flat=True)
    )
    assert statuses == ["queued", "provisioning", "running", "succeeded"]
    print(
        f"\ndatabase outage 5 s: run {run.pk} kept {lines} lines; writes waited "
        f"{notices[0]['seconds']} s; run took {time.monotonic() - cut_at:.1f} s after the cut"
    )


def test_a_commit_whose_answer_is_lost_is_not_written_twice(worker, proxy):
    """The connection dies after the server committed a batch but before the worker heard so:
    the retry finds the batch stored and does not write it again."""
    user = make_user()
    project = make_project(user)
    lines = 80
    run = launch(project, user, f"for i in $(seq 1 {lines}); do echo line $i; sleep 0.1; done")
    wait_for_run(run.pk, lambda r: r.log_lines >= 10, 90, "10 lines recorded")
    # Mid-run the only transactions are the recorder's batches (the lease renewal autocommits).
    proxy.drop_reply_to_next(b"COMMIT")
    wait_until(lambda: proxy.trapped, 30, "a COMMIT to be trapped")
    run = wait_for_run(run.pk, lambda r: r.is_terminal, 90, "finished")

    assert (run.status, run.end_reason) == (S.SUCCEEDED, "completed"), run.error_message
    assert numbered_lines(run) == [f"line {i}" for i in range(1, lines + 1)]
    assert run.log_lines == lines
    kinds = [event.type for event in assert_gap_free(run)]
    assert kinds.count("run_finished") == 1 and kinds.count("command_finished") == 1
    assert "the failed write was committed after all" in worker.log()


def test_an_outage_past_the_retry_budget_ends_the_run_with_a_typed_reason(worker, proxy):
    user = make_user()
    project = make_project(user)
    run = launch(project, user, "for i in $(seq 1 900); do echo line $i; sleep 0.1; done")
    wait_for_run(run.pk, lambda r: r.log_lines >= 10, 90, "10 lines recorded")
    outage(proxy, BUDGET + 7)
    run = wait_for_run(run.pk, lambda r: r.is_terminal, 3 * BUDGET, "finished")

    assert (run.status, run.end_reason) == (S.CRASHED, "database_unavailable")
    assert "database did not answer" in run.error_message
    # Nothing the sandbox printed before it was stopped went missing: lines 1..N, gap-free.
    printed = numbered_lines(run)
    assert 10 < len(printed) < 900
    assert printed == [f"line {i}" for i in range(1, len(printed) + 1)]
    events = assert_gap_free(run)
    # The log says what happened: how long the database was away, then the typed end.
    notice = next(e for e in events if e.type == "notice" and e.data.get("kind"))
    assert notice.data["kind"] == "database_outage" and notice.data["seconds"] >= BUDGET
    assert events[-1].type == "status" and events[-1].data["reason"] == "database_unavailable"
    assert notice.seq < events[-1].seq
    # The sandbox was stopped, not left printing into the void.
    assert leftover_sandboxes(worker.owner) == []
