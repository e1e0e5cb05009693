"""Reconnect storms against the real server: daphne, the run socket, a worker printing.

The Python client speaks RFC 6455 over a plain TCP socket and follows the page's protocol
(static/js/run_page.js): remember the last seq applied, ignore anything at or below it, resync
on a hole, reconnect with ``?after=<last seq>``. Drops are abrupt (TCP reset, no close frame),
at random points, once in the middle of a replay page. The browser variant drops Chromium's own
socket (closed from JS, and once with the network offline while it retries).
"""

from __future__ import annotations

import base64
import json
import os
import random
import socket
import struct
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
from django.test import Client

from apps.runs.models import Run
from tests.e2e.test_run_page import log_in, rendered_lines
from tests.projects.factories import make_project, make_user
from tests.reliability.conftest import launch, wait_done, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker, pytest.mark.slow]
S = Run.Status

PAD = "x" * 40  # ~52 bytes a line: 12,000 lines (our replay backlog) are two frames


def printer(lines: int, batches: int, pause: float) -> str:
    """Steady output: ``lines`` lines "line <n> <pad>" in ``batches`` bursts ``pause`` apart."""
    per = lines // batches
    return (
        f"for b in $(seq 0 {batches - 1}); do seq $((b*{per}+1)) $((b*{per}+{per}))"
        f" | sed 's/.*/line & {PAD}/'; sleep {pause}; done"
    )


class Dropped(Exception):
    pass


class RawWebSocket:
    """A minimal WebSocket client: text frames in, pings answered, ``drop()`` resets the TCP
    connection without a close frame (a laptop lid, a dead proxy)."""

    def __init__(self, url: str, *, cookie: str, origin: str) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {parts.path}?{parts.query} HTTP/1.1\r\n"
            f"Host: {parts.hostname}:{parts.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {origin}\r\nCookie: {cookie}\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise ConnectionError(f"handshake refused: {status!r}")

    def _recv(self) -> bytes:
        data = self.sock.recv(1 << 16)
        if not data:
            raise Dropped("server closed the connection")
        return data

    def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self.buffer += self._recv()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def receive(self) -> str | None:
        """The next text message; None once the server sent a close frame."""
        message = b""
        while True:
            first, second = self._exactly(2)
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._exactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._exactly(8))
            mask = self._exactly(4) if second & 0x80 else b""
            payload = self._exactly(length)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                return None
            if opcode == 0x9:
                self._send(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            message += payload
            if first & 0x80:
                return message.decode()

    def drop(self) -> None:
        # SO_LINGER 0: close() sends a RST instead of a FIN - no goodbye at all.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


@dataclass
class Follower:
    """The page's socket logic (run_page.js onEvents), plus counters for the test."""

    last_seq: int = 0
    lines: list[tuple[int, str]] = field(default_factory=list)
    raw_events: int = 0
    raw_duplicates: int = 0
    holes: int = 0
    end: dict | None = None

    def apply(self, message: str) -> int | None:
        """Apply one message; returns the last seq it carried (None for other messages)."""
        data = json.loads(message)
        if data["type"] == "run.end":
            self.end = data
            return None
        if data["type"] != "events":
            return None
        for event in data["events"]:
            self.raw_events += 1
            if event["seq"] <= self.last_seq:
                self.raw_duplicates += 1
                continue
            if event["seq"] != self.last_seq + 1:
                self.holes += 1
                raise Dropped(f"hole: expected {self.last_seq + 1}, got {event['seq']}")
            self.last_seq = event["seq"]
            if event["type"] == "log":
                start = event["data"]["line"]
                for offset, text in enumerate(event["data"]["text"].split("\n")):
                    self.lines.append((start + offset, text))
        return data["events"][-1]["seq"] if data["events"] else None


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def test_a_client_dropping_ten_times_during_a_50000_line_run_sees_every_line_once(
    live_url, e2e_worker
):
    lines_total, drops_wanted, mid_replay_drop = 50_000, 10, 2
    user = make_user("storm")
    project = make_project(user, name="Storm", timeout_seconds=300)
    cookie, origin = session_cookie(user), live_url
    run = launch(project, user, printer(lines_total, 50, 0.4), queue=e2e_worker.queue)
    ws_url = live_url.replace("http://", "ws://") + f"/ws/runs/{run.pk}/"
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    follower = Follower()
    drops = connections = 0
    mid_replay: dict | None = None
    wait_for(run.pk, lambda r: r.log_lines > 0, 90, "printing")

    deadline = time.monotonic() + 180
    while follower.end is None:
        assert time.monotonic() < deadline, (seed, follower.last_seq, drops)
        replay_test = drops == mid_replay_drop and mid_replay is None
        if replay_test:
            # Let a backlog of several frames build up, then drop after the first frame.
            backlog_from = follower.lines[-1][0] if follower.lines else 0
            wait_for(
                run.pk,
                lambda r, since=backlog_from: r.log_lines - since >= 12_000 or r.is_terminal,
                60,
                "a backlog",
            )
            target = Run.objects.get(pk=run.pk).last_seq
        socket_ = RawWebSocket(f"{ws_url}?after={follower.last_seq}", cookie=cookie, origin=origin)
        connections += 1
        lifetime = rng.uniform(0.1, 0.8)
        opened = time.monotonic()
        try:
            while True:
                message = socket_.receive()
                if message is None:
                    break  # the server ended the stream (after run.end)
                upto = follower.apply(message)
                if replay_test and upto is not None:
                    mid_replay = {"received_upto": upto, "backlog_upto": target}
                    raise Dropped("mid-replay")
                if (
                    follower.end is None
                    and drops < drops_wanted
                    and not replay_test
                    and time.monotonic() - opened >= lifetime
                ):
                    raise Dropped("random point")
        except Dropped:
            socket_.drop()
            drops += 1
            time.sleep(rng.uniform(0, 0.2))
            continue
        socket_.drop()

    run = wait_done(run.pk)
    numbers = [number for number, _ in follower.lines]
    context = {"seed": seed, "drops": drops, "connections": connections}
    assert run.status == S.SUCCEEDED, context
    assert drops >= drops_wanted and follower.holes == 0, context
    # The drop in the middle of a replay really cut a page short.
    assert mid_replay and mid_replay["received_upto"] < mid_replay["backlog_upto"], mid_replay
    # Every printed line exactly once, in order, and nothing else.
    assert len(numbers) == lines_total and numbers == list(range(1, lines_total + 1)), context
    assert all(text == f"line {n} {PAD}" for n, text in follower.lines), context
    assert follower.end["last_seq"] == run.last_seq == follower.last_seq
    # Resuming with ?after=<last seq> means the server never resends what the client has.
    assert follower.raw_duplicates == 0, (follower.raw_duplicates, follower.raw_events, context)
    print(
        f"reconnect storm: {lines_total} lines, {run.last_seq} events, {connections} "
        f"connections, {drops} drops, {follower.raw_duplicates} raw duplicates (seed {seed})"
    )


def test_the_run_page_shows_every_line_once_across_three_dropped_sockets(
    live_url, e2e_worker, page
):
    lines_total = 5_000
    user = make_user("storm-browser")
    project = make_project(user, name="Storm browser", timeout_seconds=300)
    log_in(page, live_url, user.username)
    sockets: list = []
    page.on("websocket", lambda ws: sockets.append(ws) if "/ws/runs/" in ws.url else None)
    run = launch(project, user, printer(lines_total, 20, 1.0), queue=e2e_worker.queue)
    page.goto(f"{live_url}/runs/{run.pk}/")

    def shown() -> int:
        return page.evaluate("() => document.querySelectorAll('#log-lines .ln').length")

    def wait_shown(count: int) -> None:
        page.wait_for_function(
            "n => document.querySelectorAll('#log-lines .ln').length >= n",
            arg=count,
            timeout=90_000,
        )

    def drop_live_socket() -> None:
        """Close the page's socket under it, while the run is still streaming."""
        page.wait_for_function(
            "() => { const st = window.sandboxRunPage.state;"
            " return st.ended || (st.socket && st.socket.readyState === 1); }",
            timeout=60_000,
        )
        closed = page.evaluate(
            "() => { const st = window.sandboxRunPage.state;"
            " if (st.ended || !st.socket) return false; st.socket.close(); return true; }"
        )
        assert closed, "the run ended before the drop: make it print for longer"

    wait_shown(300)
    drop_live_socket()  # drop 1: the socket closes under the page
    wait_shown(1_200)
    errors_before_offline = len(page.js_errors)
    page.context.set_offline(True)  # drop 2: closed while offline; retries fail for a while
    drop_live_socket()
    time.sleep(1.5)
    page.context.set_offline(False)
    wait_shown(shown() + 1)  # back online and streaming again
    offline_errors = page.js_errors[errors_before_offline:]
    del page.js_errors[errors_before_offline:]
    wait_shown(2_500)
    drop_live_socket()  # drop 3
    run = wait_done(run.pk)
    page.wait_for_function(
        "() => document.getElementById('live-pill').dataset.state === 'ended'", timeout=60_000
    )

    assert run.status == S.SUCCEEDED
    assert len(sockets) >= 4, len(sockets)  # the first socket and at least three reconnects
    assert shown() == lines_total
    assert rendered_lines(page) == [[n, f"line {n} {PAD}"] for n in range(1, lines_total + 1)]
    # Offline, the header's htmx refreshes fail (htmx logs them); nothing else may go wrong.
    assert page.js_errors == []
    assert all("htmx:" in e or "ERR_INTERNET_DISCONNECTED" in e for e in offline_errors), (
        offline_errors
    )
