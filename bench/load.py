"""Load benchmark: many simultaneous script runs while people browse the run and history pages.

    uv run python bench/load.py [--runs 30] [--seconds 60] [--workers 1] [--concurrency 30]
                                [--pool prefork|threads] [--clients 4] [--followers 5]
                                [--baseline-seconds 15] [--json results.json]

Starts what production runs, as subprocesses (``--workers`` Celery workers of ``--concurrency``
each, and daphne), against a database of its own (a fresh SQLite file under var/bench/, or
DATABASE_URL if set: use a scratch database), real Redis and the real Docker Engine. Then:

1. baseline: ``--clients`` logged-in HTTP clients fetch the run page of a finished run of the
   same shape, the history page and the run events API for ``--baseline-seconds`` with no run
   active;
2. load: ``--runs`` script runs are launched at once; each prints a few lines a second with a
   burst of 1,000 lines every 20 s for ``--seconds``. The same clients keep fetching (run pages
   of the active runs), and ``--followers`` WebSocket clients follow runs like the page does;
3. check: every run ``succeeded``, its events have seqs 1..last_seq (no gap, no duplicate) and
   its log is exactly the lines the script printed, once each and in order; every follower saw
   the same gap-free stream up to the end.

Reported: p50/p95/max per page during the load and at baseline (and their ratio), launch →
all runs running, total wall time, a table and JSON. The functions below are also what
tests/load/test_thirty_runs.py runs against the test database.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "var" / "bench"
PAGES = ("run_page", "history_page", "events_api")
# For the web server under test: the clients poll the events API far faster than a script
# would, and the API's Redis counters are keyed by token id and client IP only, so another
# installation's (or test session's) token 1, or its bad-token probes from 127.0.0.1, would
# count against these clients. Odd window lengths give these counters keys of their own.
API_LIMITS_ENV = {
    "API_RATE_LIMIT_REQUESTS": "1000000",
    "API_RATE_LIMIT_WINDOW_SECONDS": "61",
    "API_AUTH_FAILURE_LIMIT_REQUESTS": "1000000",
    "API_AUTH_FAILURE_WINDOW_SECONDS": "7",
}


# -- the runs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """What each run prints: ``lines_per_tick`` lines a second, and a burst of ``burst_lines``
    lines every ``burst_every`` seconds, for ``seconds`` seconds."""

    seconds: int = 60
    lines_per_tick: int = 4
    burst_every: int = 20
    burst_lines: int = 1000

    def script(self, name: str) -> str:
        # One line: each line of a script run's task is one command.
        return (
            f"for s in $(seq 1 {self.seconds}); do "
            f"for k in $(seq 1 {self.lines_per_tick}); do echo {name} tick $s line $k; done; "
            f"if [ $((s % {self.burst_every})) -eq 0 ]; then "
            f"seq -f '{name} burst '$s' line %g' 1 {self.burst_lines}; fi; "
            "sleep 1; done"
        )

    def lines(self, name: str) -> list[str]:
        out: list[str] = []
        for s in range(1, self.seconds + 1):
            out += [f"{name} tick {s} line {k}" for k in range(1, self.lines_per_tick + 1)]
            if s % self.burst_every == 0:
                out += [f"{name} burst {s} line {i}" for i in range(1, self.burst_lines + 1)]
        return out


def check_run(run, shape: Shape, name: str) -> tuple[list[str], int]:
    """What is wrong with a finished run's stored events (empty: nothing), and how many printed
    lines the log shows split in two.

    A split is not a loss: the recorder shows a line without its newline after 0.5 s (prompts,
    progress dots; recorder.PARTIAL_LINE_AFTER), so when a starved CPU delays the rest of a
    line that long, the rest becomes the next line. Every byte is still there, once, in order.
    """
    from apps.runs.models import RunEvent

    problems = []
    if run.status != "succeeded":
        problems.append(f"run {run.pk} ended {run.status} ({run.end_reason}: {run.error_message})")
    rows = list(
        RunEvent.objects.filter(run_id=run.pk)
        .order_by("seq")
        .values_list("seq", "type", "text", "line_start", "line_count")
    )
    seqs = [row[0] for row in rows]
    if seqs != list(range(1, run.last_seq + 1)):
        problems.append(f"run {run.pk}: seqs are not 1..{run.last_seq} ({len(seqs)} events)")
    lines: list[str] = []
    for _, kind, text, line_start, line_count in rows:
        if kind != "log":
            continue
        if line_start != len(lines) + 1:
            problems.append(
                f"run {run.pk}: log event starts at line {line_start}, not {len(lines) + 1}"
            )
        chunk = text.split("\n")
        if len(chunk) != line_count:
            problems.append(f"run {run.pk}: event says {line_count} lines, holds {len(chunk)}")
        lines += chunk
    expected = shape.lines(name)
    splits, index = 0, 0
    for want in expected:
        got = lines[index] if index < len(lines) else None
        index += 1
        while got is not None and got != want and want.startswith(got) and index < len(lines):
            got += lines[index]
            index += 1
            splits += 1
        if got != want:
            problems.append(
                f"run {run.pk}: printed line {want!r} is stored as {got!r} "
                f"(log has {len(lines)} lines for {len(expected)} printed)"
            )
            break
    else:
        if index != len(lines):
            problems.append(f"run {run.pk}: {len(lines) - index} lines more than printed")
    return problems, splits


def launch_runs(*, project, user, shape: Shape, count: int, prefix: str = "r") -> list:
    from apps.runs.services import start_run

    return [
        start_run(project=project, user=user, task=shape.script(f"{prefix}{n}"), overrides={})
        for n in range(count)
    ]


def wait_for_runs(run_ids: list[int], *, launched: float, timeout: float) -> dict:
    """Poll until every run is finished; the monotonic times all were running and all done."""
    from apps.runs.models import Run

    all_running = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = list(Run.objects.filter(pk__in=run_ids).values_list("status", flat=True))
        started = sum(s not in ("queued", "provisioning") for s in statuses)
        if all_running is None and started == len(run_ids):
            all_running = time.monotonic()
        if not any(s in Run.ACTIVE for s in statuses):
            return {"all_running": all_running, "all_done": time.monotonic()}
        time.sleep(0.2)
    raise TimeoutError(f"runs still active after {timeout:.0f} s")


# -- measuring the pages --------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(samples: list[float]) -> dict:
    if not samples:
        return {"n": 0}
    return {
        "n": len(samples),
        "p50_ms": round(statistics.median(samples) * 1000, 1),
        "p95_ms": round(pct(samples, 0.95) * 1000, 1),
        "max_ms": round(max(samples) * 1000, 1),
    }


class PageClients:
    """``clients`` threads, each a logged-in browser fetching pages one after another with a
    short pause (a person clicking around, not a flood), timing every response."""

    def __init__(
        self, base_url: str, *, cookie: str, token: str | None, clients: int, think: float = 0.1
    ) -> None:
        self.base_url, self.cookie, self.token = base_url, cookie, token
        self.clients, self.think = clients, think
        self.run_ids: list[int] = []
        self.samples: dict[str, list[float]] = {name: [] for name in PAGES}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def measure(self, run_ids: list[int]) -> None:
        """Start (or retarget) the clients; samples so far are kept until :meth:`take`."""
        self.run_ids = list(run_ids)
        if not self._threads:
            self._stop.clear()
            for index in range(self.clients):
                thread = threading.Thread(target=self._loop, args=(index,), daemon=True)
                thread.start()
                self._threads.append(thread)

    def take(self) -> dict[str, list[float]]:
        with self._lock:
            samples, self.samples = self.samples, {name: [] for name in PAGES}
        return samples

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        self._threads = []

    def _loop(self, index: int) -> None:
        import logging

        import httpx

        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise

        rng = random.Random(index)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        with httpx.Client(
            base_url=self.base_url, cookies={"sessionid": self.cookie}, timeout=60
        ) as client:
            turn = index
            while not self._stop.is_set():
                page = PAGES[turn % (len(PAGES) if self.token else 2)]
                turn += 1
                run_id = rng.choice(self.run_ids)
                path, extra = {
                    "run_page": (f"/runs/{run_id}/", {}),
                    "history_page": ("/runs/", {}),
                    "events_api": (f"/api/v1/runs/{run_id}/events?after=0&limit=100", headers),
                }[page]
                began = time.perf_counter()
                try:
                    response = client.get(path, headers=extra)
                    elapsed = time.perf_counter() - began
                    ok = response.status_code == 200
                    detail = f"{response.status_code} {path}"
                except httpx.HTTPError as exc:
                    elapsed, ok, detail = time.perf_counter() - began, False, f"{exc!r} {path}"
                with self._lock:
                    if ok:
                        self.samples[page].append(elapsed)
                    else:
                        self.errors.append(detail)
                self._stop.wait(self.think)


# -- WebSocket followers (a plain RFC 6455 client: the bench needs no extra library) -------------


async def follow(port: int, cookie: str, run_id: int) -> dict:
    """Follow a run like the page does (``after=0``); the seqs received and whether it ended."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**24)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /ws/runs/{run_id}/?after=0 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:{port}\r\n"
            f"Cookie: sessionid={cookie}\r\n\r\n"
        ).encode()
    )
    if b" 101 " not in await reader.readline():
        raise RuntimeError(f"run {run_id}: WebSocket refused")
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    seqs: list[int] = []
    ended, parts = False, []
    try:
        while not ended:
            head = await reader.readexactly(2)
            length = head[1] & 0x7F
            if length in (126, 127):
                size = 2 if length == 126 else 8
                length = int.from_bytes(await reader.readexactly(size), "big")
            payload = await reader.readexactly(length)
            opcode = head[0] & 0x0F
            if opcode == 8:
                break
            if opcode == 9:  # daphne pings every 20 s and drops clients that stay silent
                mask = os.urandom(4)
                masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                writer.write(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)
                continue
            if opcode not in (0, 1):
                continue
            parts.append(payload)
            if not head[0] & 0x80:
                continue
            message = json.loads(b"".join(parts))
            parts = []
            ended = message.get("type") == "run.end"
            seqs += [event["seq"] for event in message.get("events", [])]
    except asyncio.IncompleteReadError:
        pass
    finally:
        writer.close()
    return {"run_id": run_id, "ended": ended, "seqs": seqs}


def follow_in_thread(port: int, cookie: str, run_ids: list[int]) -> Callable[[], list[dict]]:
    """Start followers on their own event loop; returns a function waiting for their results."""
    results: list[dict] = []

    async def gather() -> None:
        found = await asyncio.gather(
            *(follow(port, cookie, run_id) for run_id in run_ids), return_exceptions=True
        )
        results.extend(r if isinstance(r, dict) else {"error": repr(r)} for r in found)

    thread = threading.Thread(target=lambda: asyncio.run(gather()), daemon=True)
    thread.start()

    def wait(timeout: float = 120) -> list[dict]:
        thread.join(timeout)
        return results

    return wait


def check_followers(results: list[dict], last_seqs: dict[int, int]) -> list[str]:
    problems = []
    for result in results:
        if "error" in result:
            problems.append(f"follower failed: {result['error']}")
            continue
        run_id, seqs = result["run_id"], result["seqs"]
        if not result["ended"] or seqs != list(range(1, last_seqs[run_id] + 1)):
            problems.append(
                f"follower of run {run_id}: {len(seqs)} seqs, ended={result['ended']}, "
                f"expected 1..{last_seqs[run_id]} once each"
            )
    return problems


# -- the scenario ---------------------------------------------------------------------------------


@dataclass
class LoadResult:
    runs: int
    baseline: dict[str, dict]
    load: dict[str, dict]
    ratios_p95: dict[str, float]
    launch_to_all_running_s: float | None
    wall_s: float
    problems: list[str] = field(default_factory=list)
    http_errors: list[str] = field(default_factory=list)
    followers: int = 0
    split_lines: int = 0

    def table(self) -> str:
        rows = [
            "| page | baseline p50 / p95 / max (n) | under load p50 / p95 / max (n) | p95 ratio |",
            "|---|---|---|---|",
        ]
        for page in PAGES:
            base, load = self.baseline.get(page, {}), self.load.get(page, {})
            if not base.get("n") or not load.get("n"):
                continue
            rows.append(
                f"| {page} | {base['p50_ms']} / {base['p95_ms']} / {base['max_ms']} ms "
                f"({base['n']}) | {load['p50_ms']} / {load['p95_ms']} / {load['max_ms']} ms "
                f"({load['n']}) | {self.ratios_p95[page]}x |"
            )
        rows.append(
            f"\n{self.runs} runs: launch → all running "
            f"{self.launch_to_all_running_s} s, launch → all finished {self.wall_s} s, "
            f"{self.followers} WebSocket followers, {len(self.http_errors)} HTTP errors, "
            f"{self.split_lines} printed lines shown split in two, "
            f"problems: {self.problems or 'none'}"
        )
        return "\n".join(rows)

    def as_dict(self) -> dict:
        return {
            key: getattr(self, key)
            for key in (
                "runs",
                "baseline",
                "load",
                "ratios_p95",
                "launch_to_all_running_s",
                "wall_s",
                "followers",
                "split_lines",
                "problems",
            )
        } | {"http_errors": self.http_errors[:20], "http_error_count": len(self.http_errors)}


def run_load(
    *,
    base_url: str,
    cookie: str,
    token: str | None,
    user,
    project,
    shape: Shape,
    runs: int,
    clients: int,
    followers: int,
    baseline_seconds: float,
    timeout: float,
) -> LoadResult:
    """Baseline (idle, a finished run of the same shape), then ``runs`` runs at once."""
    from apps.runs.models import Run

    port = int(base_url.rsplit(":", 1)[1])
    # The baseline's run page: a finished run of the same kind, one burst long (1,000+ lines,
    # so its page shows as many lines as a loaded run's).
    short = dataclasses.replace(shape, seconds=shape.burst_every)
    warmup = launch_runs(project=project, user=user, shape=short, count=1, prefix="warmup")
    wait_for_runs([warmup[0].pk], launched=time.monotonic(), timeout=timeout)
    pages = PageClients(base_url, cookie=cookie, token=token, clients=clients)
    pages.measure([warmup[0].pk])
    try:
        time.sleep(min(5.0, baseline_seconds / 2))  # first requests load templates, open pools
        pages.take()
        time.sleep(baseline_seconds)
        baseline = pages.take()
        launched = time.monotonic()
        batch = launch_runs(project=project, user=user, shape=shape, count=runs)
        ids = [run.pk for run in batch]
        pages.measure(ids)
        waiting = follow_in_thread(port, cookie, ids[:followers])
        times = wait_for_runs(ids, launched=launched, timeout=timeout)
        load = pages.take()
    finally:
        pages.stop()
    problems, split_lines = [], 0
    finished = {run.pk: run for run in Run.objects.filter(pk__in=ids)}
    for n, run_id in enumerate(ids):
        wrong, splits = check_run(finished[run_id], shape, f"r{n}")
        problems += wrong
        split_lines += splits
    results = waiting()
    problems += check_followers(results, {pk: run.last_seq for pk, run in finished.items()})
    base = {page: summary(baseline[page]) for page in PAGES}
    loaded = {page: summary(load[page]) for page in PAGES}
    return LoadResult(
        runs=runs,
        baseline=base,
        load=loaded,
        ratios_p95={
            page: round(loaded[page]["p95_ms"] / base[page]["p95_ms"], 2)
            for page in PAGES
            if base[page].get("n") and loaded[page].get("n")
        },
        launch_to_all_running_s=(
            round(times["all_running"] - launched, 1) if times["all_running"] else None
        ),
        wall_s=round(times["all_done"] - launched, 1),
        problems=problems,
        split_lines=split_lines,
        http_errors=pages.errors,
        followers=len(results),
    )


def make_user_and_project(name: str):
    """A user with a session cookie, an API token, and a script project sized for the runs."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    from apps.api.services import create_token
    from apps.projects.services import create_project

    user = get_user_model().objects.create_user(name, password=uuid.uuid4().hex)
    project = create_project(
        owner=user,
        values={
            "name": name,
            "default_kind": "script",
            "memory_mb": 256,
            "cpu_cores": 0.5,
            "disk_mb": 64,
            "timeout_seconds": 900,
        },
    )
    client = Client()
    client.force_login(user)
    _, token = create_token(user=user, name="load", scopes=["runs:read"])
    return user, project, client.cookies["sessionid"].value, token


def spawn(argv: list[str], *, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    handle = log_path.open("wb")
    return subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def start_daphne(*, env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, str]:
    """daphne on a free port; returns it once /login/ answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
    process = spawn([*argv, "sandboxweb.asgi:application"], env=env, log_path=log_path)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daphne exited; see {log_path}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url + "/login/", timeout=2):  # noqa: S310
            return process, url
        time.sleep(0.3)
    stop(process)
    raise RuntimeError(f"daphne did not start; see {log_path}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


# -- the command ----------------------------------------------------------------------------------


def start_workers(
    *,
    count: int,
    concurrency: int,
    pool: str,
    queue: str,
    env: dict[str, str],
    log_dir: Path,
    timeout: float = 240,
) -> list[subprocess.Popen]:
    """``count`` Celery workers on ``queue``, returned once all answer a ping. A prefork
    worker answers only after forking all its children: 30 of them on a busy 2-core host can
    take over a minute, hence the long timeout."""
    from sandboxweb.celery import app

    processes = []
    for index in range(count):
        argv = [
            sys.executable, "-m", "celery", "--app", "sandboxweb", "worker",
            "--loglevel", "WARNING", "--queues", queue, "--hostname", f"{queue}-{index}@%h",
            "--concurrency", str(concurrency), "--pool", pool,
            "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        log_path = log_dir / f"load-worker-{index}.log"
        processes.append(spawn(argv, env={**env, "CELERY_QUEUE": queue}, log_path=log_path))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            break
        replies = app.control.ping(timeout=0.5)
        if sum(name.startswith(queue) for reply in replies for name in reply) == count:
            return processes
    for process in processes:
        stop(process)
    raise RuntimeError(f"workers did not start; see {log_dir}/load-worker-*.log")


def rss_mb(processes: list[subprocess.Popen]) -> float:
    """Resident memory of these processes and all their descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [p.pid for p in processes]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return round(total / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=30)
    parser.add_argument("--pool", choices=["prefork", "threads"], default="prefork")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--followers", type=int, default=5)
    parser.add_argument("--baseline-seconds", type=float, default=15)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    tag = uuid.uuid4().hex[:6]
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("DATABASE_URL"):
        database = BENCH_DIR / "load.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        os.environ["DATABASE_URL"] = f"sqlite:///{database}"
    os.environ["SANDBOX_OWNER"] = f"bench-load-{tag}"
    os.environ.update(API_LIMITS_ENV)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sandboxweb.settings")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from apps.sandboxes import SandboxManager
    from sandboxweb.celery import app

    call_command("migrate", verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    user, project, cookie, token = make_user_and_project(f"load-{tag}")
    queue = f"bench-load-{tag}"
    app.conf.task_default_queue = queue
    processes: list[subprocess.Popen] = []
    shape = Shape(seconds=args.seconds)
    try:
        processes += start_workers(
            count=args.workers,
            concurrency=args.concurrency,
            pool=args.pool,
            queue=queue,
            env=dict(os.environ),
            log_dir=BENCH_DIR,
        )
        idle_rss = rss_mb(processes)
        daphne, url = start_daphne(
            env={**os.environ, "CELERY_QUEUE": queue}, log_path=BENCH_DIR / "load-daphne.log"
        )
        processes.append(daphne)
        peak = {"rss": 0.0}
        stopping = threading.Event()

        def watch_memory() -> None:
            # Also the peak of database connections: each active run holds several (task,
            # recorder and watcher threads), which is what sizes PostgreSQL's max_connections.
            while not stopping.is_set():
                peak["rss"] = max(peak["rss"], rss_mb(processes[:-1]))
                if connection.vendor == "postgresql":
                    with connection.cursor() as cursor:
                        cursor.execute(
                            "SELECT count(*) FROM pg_stat_activity"
                            " WHERE datname = current_database()"
                        )
                        peak["connections"] = max(peak.get("connections", 0), cursor.fetchone()[0])
                stopping.wait(1)
            connection.close()

        sampler = threading.Thread(target=watch_memory, daemon=True)
        sampler.start()
        load1 = os.getloadavg()[0]
        result = run_load(
            base_url=url,
            cookie=cookie,
            token=token,
            user=user,
            project=project,
            shape=shape,
            runs=args.runs,
            clients=args.clients,
            followers=args.followers,
            baseline_seconds=args.baseline_seconds,
            timeout=args.seconds * 10 + 300,
        )
        stopping.set()
    finally:
        for process in processes:
            stop(process)
        with SandboxManager(owner=os.environ["SANDBOX_OWNER"]) as janitor:
            janitor.reap_orphans(is_live=lambda labels: False, grace_seconds=0)
    output = {
        **result.as_dict(),
        "database": connection.vendor,
        "cpus": os.cpu_count(),
        "workers": args.workers,
        "concurrency": args.concurrency,
        "pool": args.pool,
        "seconds": args.seconds,
        "lines_per_run": len(shape.lines("r0")),
        "worker_rss_idle_mb": idle_rss,
        "worker_rss_peak_mb": peak["rss"],
        "db_connections_peak": peak.get("connections"),
        "loadavg_1m_at_start": round(load1, 2),
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
    }
    print(result.table())
    print(json.dumps(output, indent=2))
    if args.json:
        args.json.write_text(json.dumps(output, indent=2))
    if result.problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
