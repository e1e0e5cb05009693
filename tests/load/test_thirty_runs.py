"""Issue 8: 30 script runs at once on one machine, while people browse (bench/load.py, as a test).

The real stack: daphne serving the pages and sockets, one real Celery worker with a child per
run, Docker sandboxes, Redis and the test database. Every run must finish ``succeeded`` with
every line it printed stored once, in order, under gap-free seqs; WebSocket followers must see
the same stream to the end; no sandbox may outlive its run; and the run and history pages must
stay responsive: p95 during the load within RATIO x the p95 of the same pages with nothing
running, measured minutes earlier in the same test (a ratio, so a slow CI host is not a failure;
measured p95 ratios were 1.8-5.9x on a 2-core host also running other suites; see
docs/benchmarks.md "Load").
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.management import call_command
from django.db import connection

from bench.load import (
    API_LIMITS_ENV,
    Shape,
    make_user_and_project,
    run_load,
    start_daphne,
    start_workers,
    stop,
)
from sandboxweb.celery import app
from tests.conftest import child_environment
from tests.runs.workers import leftover_sandboxes, reap_all

RUNS = 30
RATIO = 10.0
# 30 s each, 4 lines a second and a 1,000-line burst every 10 s: 3,120 lines a run.
SHAPE = Shape(seconds=30, lines_per_tick=4, burst_every=10, burst_lines=1000)
# A run holds two database connections while it runs (its recorder's and its watcher's
# threads; the task thread gives its own back); PostgreSQL refuses connections past
# max_connections.
CONNECTIONS_PER_RUN = 2

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(480)]


def runs_the_database_can_hold() -> int:
    if connection.vendor != "postgresql":
        return RUNS
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int"
            " - (SELECT count(*) FROM pg_stat_activity)"
        )
        free = cursor.fetchone()[0]
    # Room for daphne, this process and the worker's parent.
    return min(RUNS, (free - 12) // CONNECTIONS_PER_RUN)


@pytest.mark.django_db(transaction=True)
def test_thirty_simultaneous_runs_all_finish_gap_free_and_pages_stay_responsive(
    docker_engine, redis_server, tmp_path
):
    runs = runs_the_database_can_hold()
    print(f"\nload: {runs} simultaneous runs ({connection.vendor})")
    # A default PostgreSQL (max_connections=100, as in CI) holds 30; a smaller one is a setup
    # problem to fix (docs/benchmarks.md "Load" sizes it), not a reason to test less.
    assert runs == RUNS, f"the database has room for {runs} runs only; raise max_connections"
    tag = uuid.uuid4().hex[:8]
    queue, owner = f"test-load-{tag}", f"pytest-load-{tag}"
    previous_queue = app.conf.task_default_queue
    app.conf.task_default_queue = queue
    # One worker with a child per run (what docs/benchmarks.md "Load" recommends for 30). It
    # takes a while to fork them all on a busy host: it boots while the rest is set up.
    boot_began = time.monotonic()
    booting = ThreadPoolExecutor(1).submit(
        start_workers,
        count=1,
        concurrency=runs,
        pool="prefork",
        queue=queue,
        env=child_environment(SANDBOX_OWNER=owner),
        log_dir=tmp_path,
    )
    call_command("collectstatic", interactive=False, verbosity=0)
    user, project, cookie, token = make_user_and_project("loadtest")
    workers = booting.result()
    print(f"load: worker with {runs} children ready after {time.monotonic() - boot_began:.0f} s")
    try:
        daphne, url = start_daphne(
            env=child_environment(CELERY_QUEUE=queue, **API_LIMITS_ENV),
            log_path=tmp_path / "daphne.log",
        )
        try:
            began = time.monotonic()
            result = run_load(
                base_url=url,
                cookie=cookie,
                token=token,
                user=user,
                project=project,
                shape=SHAPE,
                runs=runs,
                clients=3,
                followers=4,
                baseline_seconds=8,
                timeout=300,
            )
            print(result.table())
            print(f"load: scenario took {time.monotonic() - began:.0f} s")
        finally:
            stop(daphne)
        # Sandboxes go with their run: none may be left once every run has finished.
        deadline = time.monotonic() + 30
        while leftover_sandboxes(owner) and time.monotonic() < deadline:
            time.sleep(1)
        left = leftover_sandboxes(owner)
    finally:
        for worker in workers:
            stop(worker)
        app.conf.task_default_queue = previous_queue
        reap_all(owner)
    assert left == []

    assert result.problems == [], "\n".join(result.problems)
    assert result.followers == 4
    assert result.http_errors == []
    for page in ("run_page", "history_page", "events_api"):
        assert result.load[page]["n"] >= 20, result.load
        assert result.baseline[page]["n"] >= 5, result.baseline
        assert result.ratios_p95[page] <= RATIO, (
            f"{page}: p95 {result.load[page]['p95_ms']} ms under load vs "
            f"{result.baseline[page]['p95_ms']} ms idle"
        )
