"""Benchmark of the run pipeline: sandbox → recorder → database → channel layer → WebSocket.

    uv run python bench/pipeline.py [--lines 1000000] [--latency-runs 12] [--concurrent 20]
                                    [--history-runs 100000] [--json results.json] [--only NAME]

Starts what production runs (a Celery worker and daphne, as subprocesses) against a database of
its own (a fresh SQLite file under var/bench/, or DATABASE_URL if set: use a scratch database)
and measures, in one go:

* throughput: one script run printing ``--lines`` lines as fast as the sandbox can; a WebSocket
  client (a plain RFC 6455 client below, over the real socket) receives every event; reported
  lines/s at the client, and a check that every seq and every line number arrived exactly once;
* launch → first event: ``start_run`` until the browser-side client holds the worker's first
  event (the ``provisioning`` status) and the first log line, p50/p95, cold (no pool) and with a
  warm pool (SANDBOX_POOL_SIZE=2);
* ``--concurrent`` script runs launched at once on one worker: all must succeed, gap-free;
* the history page (/runs/) with ``--history-runs`` runs: p50/p95 server time and query counts
  over a mix of filters, sorts and deep cursor pages.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TAG = uuid.uuid4().hex[:6]
BENCH_DIR = ROOT / "var" / "bench"


def configure() -> None:
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("DATABASE_URL"):
        database = BENCH_DIR / "pipeline.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        os.environ["DATABASE_URL"] = f"sqlite:///{database}"
    os.environ["SANDBOX_OWNER"] = f"bench-pipeline-{TAG}"
    os.environ["CELERY_QUEUE"] = f"bench-pipeline-{TAG}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sandboxweb.settings")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")


configure()

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- processes ---------------------------------------------------------------------------------


class Servers:
    def __init__(self) -> None:
        self.processes: list[subprocess.Popen] = []
        self.logs = BENCH_DIR

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        handle = (self.logs / f"{name}.log").open("wb")
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def worker(self, name: str, *, concurrency: int, pool: str = "prefork", **env: str):
        from sandboxweb.celery import app

        queue = f"bench-{name}-{TAG}"
        app.conf.task_default_queue = queue
        process = self._spawn(
            f"worker-{name}",
            [
                sys.executable, "-m", "celery", "--app", "sandboxweb", "worker",
                "--loglevel", "WARNING", "--queues", queue, "--hostname", f"{queue}@%h",
                "--concurrency", str(concurrency), "--pool", pool,
                "--without-gossip", "--without-mingle",
            ],
            {"CELERY_QUEUE": queue, **env},
        )  # fmt: skip
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"worker {name} exited; see {self.logs}/worker-{name}.log")
            replies = app.control.ping(timeout=0.5)
            if any(n.startswith(queue) for reply in replies for n in reply):
                return process
        raise RuntimeError(f"worker {name} did not start")

    def daphne(self, port: int) -> subprocess.Popen:
        process = self._spawn(
            "daphne",
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
             "sandboxweb.asgi:application"],
            {},
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            url = f"http://127.0.0.1:{port}/login/"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2):
                return process
            time.sleep(0.3)
        raise RuntimeError("daphne did not start")

    def stop(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        if process in self.processes:
            self.processes.remove(process)

    def stop_all(self) -> None:
        for process in list(self.processes):
            self.stop(process)


# -- a small WebSocket client (RFC 6455), so the bench needs nothing but the standard library --


class WebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.close_code: int | None = None

    @classmethod
    async def connect(cls, port: int, path: str, cookie: str) -> WebSocket:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**24)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:{port}\r\n"
                f"Cookie: sessionid={cookie}\r\n\r\n"
            ).encode()
        )
        status = await reader.readline()
        if b" 101 " not in status:
            raise RuntimeError(f"WebSocket refused: {status!r}")
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        return cls(reader, writer)

    async def receive(self) -> str | None:
        """The next text message, or None once the server closed."""
        parts: list[bytes] = []
        while True:
            head = await self.reader.readexactly(2)
            fin, opcode, length = head[0] & 0x80, head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            payload = await self.reader.readexactly(length)
            if opcode == 8:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return None
            if opcode in (1, 0):
                parts.append(payload)
                if fin:
                    return b"".join(parts).decode()

    def close(self) -> None:
        self.writer.close()


async def watch(port: int, cookie: str, run_id: int, started: float) -> dict:
    """Follow a run like the page does; time the first event, first line, and every line."""
    socket_ = await WebSocket.connect(port, f"/ws/runs/{run_id}/?after=0", cookie)
    seqs: list[int] = []
    line_numbers_ok = True
    next_line = 1
    lines = 0
    first_event = first_line = last_line = None
    first_line_lag = None
    lags: list[float] = []
    end = None
    while True:
        message = await socket_.receive()
        if message is None:
            break
        data = json.loads(message)
        now = time.perf_counter()
        if data["type"] == "run.end":
            end = data
            continue
        for event in data.get("events", []):
            seqs.append(event["seq"])
            if first_event is None and event["seq"] >= 2:
                first_event = now - started
            if event["type"] == "log":
                count = event["data"]["text"].count("\n") + 1
                if event["data"]["line"] != next_line:
                    line_numbers_ok = False
                next_line = event["data"]["line"] + count
                lines += count
                # Event ts is the recorder's clock (same host): what the pipeline added.
                lags.append(time.time() - event["ts"])
                if first_line is None:
                    first_line = now
                    first_line_lag = lags[-1]
                last_line = now
    socket_.close()
    if not end:
        last = seqs[-1] if seqs else 0
        print(f"  run {run_id}: the server closed the socket ({socket_.close_code}) at seq {last}")
    return {
        "seqs_ok": seqs == list(range(1, len(seqs) + 1)) and bool(end),
        "last_seq": seqs[-1] if seqs else 0,
        "end": end,
        "lines": lines,
        "lines_ok": line_numbers_ok,
        "first_event": first_event,
        "first_line": (first_line - started) if first_line else None,
        "line_window": (last_line - first_line) if first_line and last_line else None,
        "first_line_lag": first_line_lag,
        "lag_p50": statistics.median(lags) if lags else None,
        "lag_p95": pct(lags, 0.95) if lags else None,
    }


# -- scenarios ------------------------------------------------------------------------------------


def setup_user_and_project():
    from django.contrib.auth import get_user_model
    from django.test import Client

    from apps.projects.services import create_project

    user = get_user_model().objects.create_user(f"bench-{TAG}", password=uuid.uuid4().hex)
    project = create_project(
        owner=user,
        values={
            "name": "bench",
            "default_kind": "script",
            "memory_mb": 512,
            "cpu_cores": 1.0,
            "disk_mb": 256,
            "timeout_seconds": 600,
            "log_limit_mb": 256,
        },
    )
    client = Client()
    client.force_login(user)
    return user, project, client.cookies["sessionid"].value


def launch(project, user, task: str):
    from apps.runs.services import start_run

    return start_run(project=project, user=user, task=task, overrides={})


def bench_throughput(port: int, cookie: str, user, project, lines: int) -> dict:
    from apps.runs.models import Run

    # One line: each line of a script run's task is one command.
    printer = (
        'python3 -c "import sys; w = sys.stdout.write; '
        f"[w('line %d of the throughput bench\\n' % i) for i in range(1, {lines + 1})]\""
    )
    started = time.perf_counter()
    run = launch(project, user, printer)
    result = asyncio.run(watch(port, cookie, run.pk, started))
    run = Run.objects.get(pk=run.pk)
    ok = result["seqs_ok"] and result["lines_ok"] and result["lines"] == lines == run.log_lines
    window = result["line_window"] or 1e-9
    return {
        "status": run.status,
        "lines": result["lines"],
        "log_mb": round(run.log_bytes / 2**20, 1),
        "events": result["last_seq"],
        "every_seq_and_line_once": ok,
        "client_lines_per_s": round(result["lines"] / window),
        "first_to_last_line_s": round(window, 2),
        "line_delivery_lag_p50_ms": ms(result["lag_p50"]),
        "line_delivery_lag_p95_ms": ms(result["lag_p95"]),
        "launch_to_done_s": round(time.perf_counter() - started, 2),
    }


def bench_latency(port: int, cookie: str, user, project, runs: int, warmup: int) -> dict:
    first_events, first_lines, lags = [], [], []
    for index in range(warmup + runs):
        started = time.perf_counter()
        run = launch(project, user, "echo hello")
        result = asyncio.run(watch(port, cookie, run.pk, started))
        assert result["seqs_ok"], result
        if index >= warmup:
            first_events.append(result["first_event"])
            first_lines.append(result["first_line"])
            lags.append(result["first_line_lag"])
        time.sleep(1.0)  # lets a warm pool refill, as it would between real launches
    return {
        "runs": runs,
        "first_event_p50_ms": ms(statistics.median(first_events)),
        "first_event_p95_ms": ms(pct(first_events, 0.95)),
        "first_line_p50_ms": ms(statistics.median(first_lines)),
        "first_line_p95_ms": ms(pct(first_lines, 0.95)),
        # Of first_line: from the line reaching the recorder to the client holding it.
        "first_line_delivery_p50_ms": ms(statistics.median(lags)),
    }


def bench_concurrent(user, project, count: int) -> dict:
    from apps.runs.models import Run, RunEvent

    started = time.perf_counter()
    runs = [
        launch(project, user, f"for i in $(seq 1 2000); do echo run {n} line $i; done; sleep 2")
        for n in range(count)
    ]
    ids = [r.pk for r in runs]
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if Run.objects.filter(pk__in=ids, status__in=Run.ACTIVE).count() == 0:
            break
        time.sleep(0.5)
    elapsed = time.perf_counter() - started
    finished = list(Run.objects.filter(pk__in=ids))
    gap_free = all(
        list(RunEvent.objects.filter(run=r).order_by("seq").values_list("seq", flat=True))
        == list(range(1, r.last_seq + 1))
        for r in finished
    )
    statuses: dict[str, int] = {}
    for r in finished:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    return {
        "runs": count,
        "statuses": statuses,
        "all_lines": all(r.log_lines == 2000 for r in finished),
        "gap_free": gap_free,
        "wall_s": round(elapsed, 1),
        "max_run_s": round(max(r.duration_ms for r in finished) / 1000, 1),
    }


def bench_history(user, count: int) -> dict:
    import datetime as dt
    from decimal import Decimal

    from django.db import reset_queries
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from apps.projects.services import create_project
    from apps.runs.models import Run

    projects = [
        create_project(
            owner=user,
            values={"name": f"history-{i}", "default_kind": "script", "default_commands": "true"},
        )
        for i in range(5)
    ]
    statuses = ["succeeded"] * 6 + ["failed", "timed_out", "cancelled", "error", "oom", "crashed"]
    now = timezone.now()
    rng = random.Random(5)
    created = time.perf_counter()
    batch = []
    for i in range(count):
        duration = rng.randint(500, 3_600_000)
        cost = Decimal(rng.randint(0, 300_000)) / Decimal(100_000)
        batch.append(
            Run(
                project=projects[i % 5],
                user=user,
                kind="script",
                task=f"make test # {i}",
                commands=["make test"],
                config={"timeout_seconds": 900},
                status=rng.choice(statuses),
                end_reason="completed",
                duration_ms=duration,
                cost_usd=cost,
                total_tokens=rng.randint(0, 2_000_000),
                last_seq=10,
            )
        )
        if len(batch) == 5000:
            Run.objects.bulk_create(batch)
            batch = []
    if batch:
        Run.objects.bulk_create(batch)
    # Spread creation times over 90 days (auto_now_add set them all to now).
    ids = list(Run.objects.filter(project__in=projects).values_list("pk", flat=True))
    with connection.cursor() as cursor:
        table = Run._meta.db_table
        if connection.vendor == "postgresql":
            cursor.execute(
                f"UPDATE {table} SET created_at = %s - (id %% 129600) * interval '1 minute' "  # noqa: S608
                "WHERE id = ANY(%s)",
                [now, ids],
            )
        else:
            cursor.execute(
                f"UPDATE {table} SET created_at = "  # noqa: S608
                "datetime(%s, '-' || (id %% 129600) || ' minutes') WHERE id >= %s",
                [now.strftime("%Y-%m-%d %H:%M:%S"), min(ids)],
            )
        if connection.vendor == "postgresql":
            cursor.execute(f"ANALYZE {table}")
        else:
            cursor.execute("ANALYZE")
    insert_s = time.perf_counter() - created

    client = Client(SERVER_NAME="localhost")
    client.force_login(user)
    since = (now - dt.timedelta(days=7)).date().isoformat()
    queries = (
        [{}] * 10
        + [{"project": projects[2].pk}] * 8
        + [{"status": "failed"}] * 8
        + [{"status": ["failed", "crashed"], "project": projects[1].pk}] * 5
        + [{"sort": "cost"}] * 6
        + [{"sort": "duration", "order": "asc"}] * 6
        + [{"min_cost": "2.5"}] * 5
        + [{"min_duration": "3000", "max_duration": "3500"}] * 5
        + [{"date_from": since}] * 5
        + [{"user": user.username, "sort": "tokens"}] * 5
    )
    timings, query_counts = [], []

    def get(params) -> str:
        reset_queries()
        with CaptureQueriesContext(connection) as captured:
            begun = time.perf_counter()
            response = client.get("/runs/", params)
            timings.append(time.perf_counter() - begun)
        assert response.status_code == 200, response.status_code
        query_counts.append(len(captured))
        return response.content.decode()

    get({})  # warm caches, template loading
    timings.clear()
    query_counts.clear()
    for params in queries:
        get(params)
    # Deep pages: follow the "Older" link 20 times, for two sorts.
    for params in ({}, {"sort": "cost"}):
        page = get(params)
        for _ in range(20):
            marker = 'data-testid="next-page"'
            if marker not in page:
                break
            href = page.split(marker)[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
            query = dict(pair.split("=", 1) for pair in href.split("?", 1)[1].split("&"))
            page = get(query)
    return {
        "runs": Run.objects.count(),
        "insert_s": round(insert_s, 1),
        "requests": len(timings),
        "p50_ms": ms(statistics.median(timings)),
        "p95_ms": ms(pct(timings, 0.95)),
        "max_ms": ms(max(timings)),
        "queries_per_page_max": max(query_counts),
        "database": connection.vendor,
    }


def reap_sandboxes() -> None:
    from apps.sandboxes import SandboxManager

    with SandboxManager(owner=os.environ["SANDBOX_OWNER"]) as janitor:
        janitor.reap_orphans(is_live=lambda labels: False, grace_seconds=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--latency-runs", type=int, default=12)
    parser.add_argument("--concurrent", type=int, default=20)
    parser.add_argument("--history-runs", type=int, default=100_000)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--only", choices=["throughput", "latency", "concurrent", "history"], action="append"
    )
    args = parser.parse_args()
    wanted = set(args.only or ["throughput", "latency", "concurrent", "history"])

    call_command("migrate", verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    user, project, cookie = setup_user_and_project()
    servers = Servers()
    results: dict = {"database": connection.vendor, "cpus": os.cpu_count()}
    port = free_port()
    try:
        if wanted & {"throughput", "latency"}:
            cold = servers.worker("cold", concurrency=2, SANDBOX_POOL_SIZE="0")
            daphne = servers.daphne(port)
            if "throughput" in wanted:
                results["throughput"] = bench_throughput(port, cookie, user, project, args.lines)
                print("throughput", results["throughput"], flush=True)
            if "latency" in wanted:
                results["latency_cold"] = bench_latency(
                    port, cookie, user, project, args.latency_runs, warmup=1
                )
                print("latency cold", results["latency_cold"], flush=True)
                servers.stop(cold)
                servers.stop(daphne)
                servers.worker("warm", concurrency=1, SANDBOX_POOL_SIZE="2")
                servers.daphne(port)
                results["latency_warm_pool"] = bench_latency(
                    port, cookie, user, project, args.latency_runs, warmup=2
                )
                print("latency warm", results["latency_warm_pool"], flush=True)
            servers.stop_all()
        if "concurrent" in wanted:
            servers.worker("many", concurrency=args.concurrent)
            results["concurrent"] = bench_concurrent(user, project, args.concurrent)
            print("concurrent", results["concurrent"], flush=True)
            servers.stop_all()
        if "history" in wanted:
            results["history"] = bench_history(user, args.history_runs)
            print("history", results["history"], flush=True)
    finally:
        servers.stop_all()
        reap_sandboxes()
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
