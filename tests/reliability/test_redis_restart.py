"""Redis restarted mid-run (reference §3.6, chaos test §3.7.3).

A private ``redis-server`` (own port, own directory) is the broker, channel layer and cache of a
private Celery worker (with its embedded beat, so the sweeper runs) and a private daphne. The
shared Redis is never touched. Mid-run the private Redis is stopped with ``SHUTDOWN NOSAVE`` and
started again on the same port: everything Redis held (queued messages, group memberships) is
gone, and the product must recover from the database alone.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
from django.test import Client

from apps.api.services import create_token
from apps.runs.models import Run, RunEvent
from apps.runs.selectors import log_lines
from tests.conftest import REPO_ROOT, child_environment
from tests.projects.factories import make_project, make_user
from tests.runs.workers import leftover_sandboxes, reap_all

STARTUP_SECONDS = 150  # for a child process to come up

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.docker,
    pytest.mark.redis,
    pytest.mark.slow,
]
S = Run.Status


# -- helpers shared by the reliability modules ----------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_for_run(run_id: int, condition, timeout: float, what: str) -> Run:
    def check():
        run = Run.objects.get(pk=run_id)
        return run if condition(run) else None

    return wait_until(check, timeout, f"run {run_id}: {what}", interval=0.2)


def assert_gap_free(run: Run) -> list[RunEvent]:
    """Every seq from 1 to last_seq exactly once; returns the events in order."""
    events = list(RunEvent.objects.filter(run=run).order_by("seq"))
    assert [event.seq for event in events] == list(range(1, run.last_seq + 1))
    return events


def numbered_lines(run: Run) -> list[str]:
    return [line.plain for line in log_lines(run=run, first=1, last=10**6)]


@dataclass
class Service:
    """A child process with its log file, stopped by its own pid (never by name)."""

    name: str
    process: subprocess.Popen
    log_path: Path
    extra: dict = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, *, timeout: float = 20) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def spawn(name: str, argv: list[str], log_dir: Path, env: dict[str, str]) -> Service:
    log_path = log_dir / f"{name}.log"
    handle = log_path.open("ab")
    process = subprocess.Popen(
        argv,
        cwd=REPO_ROOT,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    return Service(name=name, process=process, log_path=log_path)


def start_celery_worker(
    log_dir: Path, *, queue: str, env: dict[str, str], beat: bool = False, concurrency: int = 1
) -> Service:
    """A worker whose broker may not be the test process's: ready when its log says so."""
    argv = [sys.executable, "-m", "celery", "--app", "sandboxweb", "worker", "--loglevel", "INFO"]
    argv += ["--queues", queue, "--hostname", f"chaos-{queue}@%h"]
    argv += ["--concurrency", str(concurrency), "--without-gossip", "--without-mingle"]
    if beat:
        argv += ["--beat", "--schedule", str(log_dir / f"beat-{queue}")]
    worker = spawn(f"worker-{queue}", argv, log_dir, env)

    def ready() -> bool:
        if worker.process.poll() is not None:
            raise RuntimeError(f"celery worker exited early:\n{worker.log()[-4000:]}")
        return " ready." in worker.log()

    # Generous: on a loaded two-core machine imports alone can take a minute.
    wait_until(ready, STARTUP_SECONDS, "the celery worker to be ready", interval=0.2)
    return worker


def start_daphne(log_dir: Path, env: dict[str, str]) -> Service:
    port = free_port()
    argv = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
    daphne = spawn("daphne", [*argv, "sandboxweb.asgi:application"], log_dir, env)
    daphne.extra["url"] = f"http://127.0.0.1:{port}"
    daphne.extra["port"] = port

    def answers() -> bool:
        if daphne.process.poll() is not None:
            raise RuntimeError(f"daphne exited: {daphne.log()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(daphne.extra["url"] + "/login/", timeout=10).status_code == 200
        return False

    wait_until(answers, STARTUP_SECONDS, "daphne to answer", interval=0.3)
    return daphne


class WebSocket:
    """The smallest RFC 6455 client the tests need: text frames in and out, close, ping.

    Written here (no client library is a dependency) so the test sees exactly what daphne sends.
    """

    def __init__(self, port: int, path: str, cookie: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: http://127.0.0.1:{port}\r\nCookie: {cookie}\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"handshake refused: {head!r}")
            head += chunk
        head, self.buffer = head.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"handshake refused: {head!r}")
        self.close_code: int | None = None

    def _read(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("socket closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        size = len(payload)
        if size < 126:
            header += bytes([0x80 | size])
        elif size < 65536:
            header += bytes([0x80 | 126]) + size.to_bytes(2, "big")
        else:
            header += bytes([0x80 | 127]) + size.to_bytes(8, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send_json(self, message: dict) -> None:
        self._send(0x1, json.dumps(message).encode())

    def receive(self) -> dict | None:
        """The next JSON message; None once the server closed the socket."""
        message = b""
        while True:
            first, second = self._read(2)
            opcode, size = first & 0x0F, second & 0x7F
            if size == 126:
                size = int.from_bytes(self._read(2), "big")
            elif size == 127:
                size = int.from_bytes(self._read(8), "big")
            payload = self._read(size)
            if opcode == 0x8:
                self.close_code = int.from_bytes(payload[:2], "big") if payload else 1005
                return None
            if opcode == 0x9:
                self._send(0xA, payload)
                continue
            if opcode in (0x0, 0x1):
                message += payload
                if first & 0x80:
                    return json.loads(message)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send(0x8, (1000).to_bytes(2, "big"))
        self.sock.close()


class Follower(threading.Thread):
    """A watcher of a run's page socket that behaves like run_page.js: it keeps the last seq it
    applied, ignores anything at or below it, and reconnects with ``?after=<last seq>`` whenever
    the socket drops before ``run.end``. It records every event it received, duplicates included,
    so the test can check nothing was missing or sent twice."""

    def __init__(self, port: int, run_id: int, cookie: str, timeout: float = 120) -> None:
        super().__init__(daemon=True)
        self.port, self.run_id, self.cookie, self.timeout = port, run_id, cookie, timeout
        self.received: list[int] = []  # every seq, in arrival order
        self.events: dict[int, dict] = {}
        self.last_seq = 0
        self.connections = 0
        self.end: dict | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        try:
            while self.end is None and time.monotonic() < deadline:
                try:
                    socket_ = WebSocket(
                        self.port, f"/ws/runs/{self.run_id}/?after={self.last_seq}", self.cookie
                    )
                except OSError:
                    time.sleep(0.5)  # daphne busy or restarting: back off and retry
                    continue
                self.connections += 1
                try:
                    self._follow(socket_)
                except OSError:
                    pass  # dropped: reconnect from the last seq, as the page does
                finally:
                    socket_.close()
                if self.end is None:
                    time.sleep(0.5)
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def _follow(self, socket_: WebSocket) -> None:
        socket_.sock.settimeout(5)
        while True:
            try:
                message = socket_.receive()
            except TimeoutError:
                # Quiet: ask for anything missing, like the page's keep-alive ping.
                socket_.send_json({"type": "ping"})
                continue
            if message is None:
                return
            if message["type"] == "events":
                for event in message["events"]:
                    self.received.append(event["seq"])
                    if event["seq"] > self.last_seq:
                        self.events[event["seq"]] = event
                        self.last_seq = event["seq"]
            elif message["type"] == "run.end":
                self.end = message
                return


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def launch_over_api(base_url: str, token: str, project_id: int, commands: list[str]) -> int:
    response = httpx.post(
        f"{base_url}/api/v1/runs",
        json={"project": project_id, "kind": "script", "commands": commands},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


# -- the private Redis ----------


class PrivateRedis:
    """``redis-server`` on a port and directory of its own; restartable on the same port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.service: Service | None = None

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--dir", str(self.directory), "--save", "", "--appendonly", "no"]
        self.service = spawn("redis", argv, self.directory, dict(os.environ))
        wait_until(self.ping, 20, "the private redis-server to answer")

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=10
        )

    def ping(self) -> bool:
        return self.cli("PING").stdout.strip() == "PONG"

    def shutdown_nosave(self) -> None:
        self.cli("SHUTDOWN", "NOSAVE")
        assert self.service is not None
        self.service.process.wait(timeout=20)

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()


# -- fixtures ----------

REQUEUE_AFTER = 30  # the product's minimum RUN_REQUEUE_AFTER_SECONDS
SWEEP_EVERY = 3


@pytest.fixture(scope="module")
def stack(django_db_setup, django_db_blocker, docker_engine, tmp_path_factory):
    """Private Redis + a worker (concurrency 1, beat embedded) + daphne, all on that Redis."""
    directory = tmp_path_factory.mktemp("chaos-redis")
    redis_ = PrivateRedis(directory)
    redis_.start()
    tag = uuid.uuid4().hex[:8]
    queue, owner = f"chaos-redis-{tag}", f"pytest-chaos-redis-{tag}"
    with django_db_blocker.unblock():
        env = child_environment(
            REDIS_URL=redis_.url,
            CELERY_QUEUE=queue,
            SANDBOX_OWNER=owner,
            RUN_REQUEUE_AFTER_SECONDS=str(REQUEUE_AFTER),
            RUN_SWEEP_SECONDS=str(SWEEP_EVERY),
            RUN_STATS_INTERVAL_MS="500",
        )
    services: list[Service] = []
    try:
        worker = start_celery_worker(directory, queue=queue, env=env, beat=True)
        services.append(worker)
        daphne = start_daphne(directory, env)
        services.append(daphne)
        yield {
            "redis": redis_,
            "worker": worker,
            "daphne": daphne,
            "owner": owner,
            "queue": queue,
        }
    finally:
        for service in reversed(services):
            service.stop()
        redis_.stop()
        left = leftover_sandboxes(owner)
        if left:
            reap_all(owner)
            raise AssertionError(f"runs left sandboxes behind: {left}")


# -- the test ----------


def test_redis_restart_mid_run_loses_nothing(stack):
    """The worker reconnects and finishes the run; a page following it resumes from its last
    seq with nothing missing and nothing twice (the group membership died with Redis)."""
    redis_, worker, daphne = stack["redis"], stack["worker"], stack["daphne"]
    user = make_user()
    project = make_project(user, name="chaos-redis")
    _row, token = create_token(user=user, name="chaos", scopes=["runs:read", "runs:write"])
    lines = 44
    # ~11 s of output, a line every 0.25 s: the restart (after line 8) lands in the middle.
    commands = [f"for i in $(seq 1 {lines}); do echo line $i; sleep 0.25; done"]
    first = launch_over_api(daphne.extra["url"], token, project.pk, commands)
    follower = Follower(daphne.extra["port"], first, session_cookie(user))
    follower.start()
    wait_for_run(first, lambda r: r.log_lines >= 8, 60, "8 lines recorded")
    seen_before = follower.last_seq

    redis_.shutdown_nosave()
    time.sleep(2)  # the worker, beat and daphne see the connection refused
    redis_.start()

    run = wait_for_run(first, lambda r: r.is_terminal, 90, "finished")
    assert (run.status, run.end_reason) == (S.SUCCEEDED, "completed"), run.error_message
    assert numbered_lines(run) == [f"line {i}" for i in range(1, lines + 1)]
    assert_gap_free(run)
    assert "Connection to broker lost" in worker.log()  # the fault did reach the worker

    follower.join(timeout=60)
    assert follower.error is None, follower.error
    assert seen_before > 0 and follower.end is not None
    assert follower.end["status"] == S.SUCCEEDED
    # Every event exactly once over all connections: none missing, none sent twice.
    assert follower.received == list(range(1, run.last_seq + 1)), follower.received
    logged = [e["data"]["text"] for e in follower.events.values() if e["type"] == "log"]
    assert "\n".join(logged).splitlines() == [f"line {i}" for i in range(1, lines + 1)]
    print(
        f"\nredis restart: run {first} kept {lines} lines; the follower saw every event once "
        f"over {follower.connections} socket connection(s)"
    )


def queued_runs(redis_: PrivateRedis, queue: str) -> list[int]:
    """The run ids of the ``runs.execute`` messages waiting in ``queue`` (beat's sweeps wait
    there too)."""
    ids = []
    for line in redis_.cli("LRANGE", queue, "0", "-1").stdout.splitlines():
        if not line.strip():
            continue  # redis-cli prints an empty line for an empty list
        message = json.loads(line)
        if message["headers"]["task"] == "runs.execute":
            args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            ids.append(int(args[0]))
    return ids


def test_a_queue_message_lost_with_redis_is_enqueued_again(stack):
    """A run waiting in the queue when Redis lost its data is picked up again by the sweeper
    (``requeue_lost_runs``) once it has waited ``RUN_REQUEUE_AFTER_SECONDS``."""
    from celery import Celery

    redis_, daphne = stack["redis"], stack["daphne"]
    user = make_user()
    project = make_project(user, name="chaos-requeue")
    _row, token = create_token(user=user, name="chaos", scopes=["runs:read", "runs:write"])
    queue = stack["queue"]
    destination = [f"chaos-{queue}@{socket.gethostname()}"]
    # The test's own client of the private broker; not the current app, which the
    # product's shared tasks use for the other modules' runs.
    control = Celery(broker=redis_.url, set_as_current=False)
    try:
        # No worker takes messages from the queue (all busy, or none up): the message sits
        # only in Redis.
        assert control.control.cancel_consumer(queue, destination=destination, reply=True)
        run_id = launch_over_api(daphne.extra["url"], token, project.pk, ["echo requeued"])
        assert queued_runs(redis_, queue) == [run_id]
        redis_.shutdown_nosave()
        redis_.start()
        restarted = time.monotonic()
        assert queued_runs(redis_, queue) == []  # the message is gone

        def consume_again() -> bool:
            try:
                return bool(
                    control.control.add_consumer(
                        queue, destination=destination, reply=True, timeout=2
                    )
                )
            except (OSError, redis.RedisError):  # our client's connection died with Redis
                return False

        wait_until(consume_again, 30, "the worker to consume again")
        claimed = wait_for_run(
            run_id, lambda r: r.claimed_at is not None, REQUEUE_AFTER + 60, "claimed again"
        )
        after_restart = time.monotonic() - restarted
    finally:
        control.close()
    done = wait_for_run(run_id, lambda r: r.is_terminal, 60, "finished")
    assert done.status == S.SUCCEEDED and numbered_lines(done) == ["requeued"]
    assert claimed.attempt == 1
    # (enqueued_at moved to the requeue; created_at is the launch.)
    waited = (claimed.claimed_at - claimed.created_at).total_seconds()
    # Not before the requeue age (it is not a race with the original message), and within a
    # few sweeps of it.
    assert REQUEUE_AFTER <= waited <= REQUEUE_AFTER + 4 * SWEEP_EVERY + 10, waited
    print(
        f"\nredis restart: a lost queue message was enqueued again and claimed {waited:.1f} s "
        f"after the launch ({after_restart:.1f} s after the restart; requeue age "
        f"{REQUEUE_AFTER} s, sweep every {SWEEP_EVERY} s)"
    )
