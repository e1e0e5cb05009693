"""A loopback server speaking E2B's wire protocol, for tests and examples, driven by the real SDK.

One HTTP/1.1 port serves both planes (reference/e2b-protocol.md):

* **control plane** (REST/JSON, ``X-API-KEY``): create (``POST /v2/sandboxes``), list with
  metadata/state filters and ``x-next-token`` paging, info, kill, set timeout, connect
  (resume), pause, metrics. ``/sandboxes...`` paths are accepted as aliases (older SDKs).
* **envd** (routed by ``E2b-Sandbox-Id``, ``X-Access-Token`` checked): ``GET /health``,
  ``GET/POST /files`` (raw, multipart and octet-stream uploads, chunked bodies), and the
  Connect-RPC services ``process.Process`` and ``filesystem.Filesystem`` with the JSON codec.
  Those are the SDK's own generated WSGI applications (``e2b.envd.*_connect``) with the
  handlers below, so framing, codec and error envelopes come from the same ``connectrpc``
  library the client uses. Unused methods answer ``UNIMPLEMENTED``.

Every fake sandbox is a real, hardened Docker container made by our own Docker provider
(``network_mode="none"``): commands run there as the unprivileged sandbox user, never on the
host. ``Start`` is a Docker exec of ``[cmd, *args]`` (so ``/bin/bash -l -c ...`` like envd);
``SendSignal`` signals only the command's top process, as envd does; files go through fixed
``sh`` scripts inside the container; metrics are the container's real counters; killing a
sandbox removes its container.

Faithful to E2B where the SDK can tell: the JSON shapes, status codes and messages that select
the SDK's exception classes (401, 404, 429, 502 "was not found", 507), a sandbox ending at its
timeout (killed by the server, later calls 404/502), ``Retry-After``/``Should-Retry`` on
injected errors. Not modelled: templates beyond a name and a size, internet access (the
containers never have a network; the flag is only recorded), pause keeping processes (a paused
fake keeps its files only), signed URLs and preview hosts (reference section 11.3).

Fault injection: ``server.fail(method, path_regex, status, times=, headers=, message=)``;
``server.expire(sandbox_id)`` ends a sandbox as if its timeout passed; ``server.requests``
records control-plane calls (method, path, query, JSON body) for assertions.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import queue
import re
import secrets
import select
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from e2b.envd.filesystem import filesystem_connect, filesystem_pb
from e2b.envd.process import process_connect, process_pb
from protobuf import Oneof
from protobuf.wkt import Timestamp

from apps.sandboxes import (
    DEFAULT_DOCKER_IMAGE,
    ResourceLimits,
    SandboxConfig,
    SandboxError,
    SandboxManager,
)
from apps.sandboxes.docker import DockerSandbox, _Exec

TEST_API_KEY = "e2b_" + "0" * 40  # 2.40 checked the format: "e2b_" + hex
ENVD_VERSION = "0.6.7"
DEFAULT_USER = "user"
KEEPALIVE_SECONDS = 50.0
BACKING_LIFETIME = 7200  # the backing container's own backstop; far beyond any test
MAX_E2B_TIMEOUT = 24 * 3600
FAKE_TAG_VAR = "E2B_LOOPBACK_PROCESS"


@dataclass(frozen=True)
class Template:
    """What a template name stands for here: a size, and the Docker image behind it."""

    cpu_count: int = 1
    memory_mb: int = 256
    disk_mb: int = 64
    image: str = DEFAULT_DOCKER_IMAGE


DEFAULT_TEMPLATES = {"base": Template()}


@dataclass
class Fault:
    method: str
    path: re.Pattern
    status: int
    times: int
    headers: dict[str, str]
    message: str


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]


class _Abort(Exception):
    """An HTTP error answer (JSON body), raised from the plain-HTTP handlers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


# -- one fake sandbox ---------------------------------------------------------------------------


@dataclass
class FakeSandbox:
    sandbox_id: str
    template_id: str
    template: Template
    box: DockerSandbox
    metadata: dict[str, str]
    env_vars: dict[str, str]
    allow_internet: bool | None
    end_at: float
    envd_token: str = field(default_factory=lambda: secrets.token_hex(16))
    client_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    state: str = "running"
    killed: str | None = None  # why it ended
    processes: dict[int, FakeProcess] = field(default_factory=dict)
    next_pid: int = 400
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def home(self) -> str:
        return self.box.workspace  # the container's only writable home

    def end_iso(self) -> str:
        return datetime.fromtimestamp(self.end_at, UTC).isoformat().replace("+00:00", "Z")

    def start_iso(self) -> str:
        return self.started_at.isoformat().replace("+00:00", "Z")

    def resolve(self, path: str) -> str:
        if path.startswith("~"):
            path = self.home + path[1:]
        if not path.startswith("/"):
            path = f"{self.home}/{path}"
        return path

    # -- processes ------------------------------------------------------------------------
    def spawn(self, config: Any, *, stdin: bool) -> FakeProcess:
        with self.lock:
            self.next_pid += 1
            pid = self.next_pid
            process = FakeProcess(self, pid, config, stdin=stdin)
            self.processes[pid] = process
        try:
            process.start()
        except BaseException:
            with self.lock:
                self.processes.pop(pid, None)
            raise
        return process

    def process(self, selector: Any) -> FakeProcess:
        match selector.selector if selector is not None else None:
            case Oneof(field="pid", value=pid):
                with self.lock:
                    process = self.processes.get(pid)
                if process is not None and not process.ended:
                    return process
                raise ConnectError(Code.NOT_FOUND, f"process with pid {pid} not found")
            case _:
                raise ConnectError(Code.INVALID_ARGUMENT, "a process is selected by pid here")

    def run(self, argv: list[str], *, stdin: Any = None, on_output: Any = None) -> Any:
        """Run a helper inside the container, as the sandbox user (never on the host)."""
        return self.box.execute(
            argv,
            env={"LC_ALL": "C"},
            workdir="/",
            stdin=stdin,
            on_output=on_output,
            max_output_bytes=1024 if on_output is not None else None,
            timeout=600,
        )


class FakeProcess:
    """One envd process: a Docker exec whose output is queued for the Start stream."""

    def __init__(self, sandbox: FakeSandbox, pid: int, config: Any, *, stdin: bool) -> None:
        self.sandbox = sandbox
        self.pid = pid
        self.config = config
        self.stdin_enabled = stdin
        self.token = secrets.token_hex(8)
        self.events: queue.Queue = queue.Queue(maxsize=256)
        self.listening = True
        self.ended = False
        self._stdin_lock = threading.Lock()
        self._run: _Exec | None = None

    def start(self) -> None:
        box = self.sandbox.box
        env = {"HOME": self.sandbox.home, "USER": DEFAULT_USER, "LOGNAME": DEFAULT_USER}
        env.update(self.sandbox.env_vars)
        env.update(dict(self.config.envs or {}))
        env[FAKE_TAG_VAR] = self.token
        cwd = self.sandbox.resolve(self.config.cwd) if self.config.has_field("cwd") else None
        argv = [self.config.cmd, *list(self.config.args or [])]
        try:
            exec_id = box.api.exec_create(
                box.container_id,
                argv,
                stdout=True,
                stderr=True,
                stdin=self.stdin_enabled,
                environment=[f"{k}={v}" for k, v in env.items()],
                workdir=cwd or self.sandbox.home,
                user=box.config.docker.user,
            )["Id"]
            self._run = _Exec(box.api, exec_id)
            self.stream = self._run.start()
        except Exception as exc:
            if self._run is not None:
                self._run.close()
            raise ConnectError(
                Code.INVALID_ARGUMENT, f"error starting process '{argv[0]}': {exc}"
            ) from exc
        threading.Thread(target=self._pump, name=f"e2b-fake-{self.pid}", daemon=True).start()

    def _put(self, item: tuple) -> None:
        while self.listening:
            try:
                self.events.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _pump(self) -> None:
        assert self._run is not None
        try:
            self.stream.run(
                lambda name, data: self._put(("data", name, bytes(data))), deadline=None
            )
            code = self._run.exit_code(wait=5)
        except Exception:
            code = None
        finally:
            self._run.close()
        self.ended = True
        if self.sandbox.killed or code is None:
            self._put(("gone",))
        else:
            self._put(("end", code))

    def write_stdin(self, data: bytes) -> None:
        if not self.stdin_enabled:
            raise ConnectError(Code.FAILED_PRECONDITION, "stdin is not enabled for the process")
        sock = self.stream.sock
        view = memoryview(data)
        with self._stdin_lock:
            while view:
                if self.ended:  # envd: writing to an exited process fails
                    raise ConnectError(Code.NOT_FOUND, f"process with pid {self.pid} not found")
                select.select([], [sock], [], 0.1)
                try:
                    sent = sock.send(view)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    raise ConnectError(Code.NOT_FOUND, f"process {self.pid} closed stdin") from exc
                view = view[sent:]

    def close_stdin(self) -> None:
        if self.stdin_enabled:
            with self._stdin_lock, contextlib.suppress(OSError):
                self.stream.sock.shutdown(socket.SHUT_WR)

    def signal(self, sig: int) -> None:
        """Signal the command's top process only (envd: ``cmd.Process.Signal``)."""
        view = self.sandbox.box._host_view()
        if view is None:
            raise ConnectError(Code.UNIMPLEMENTED, "the loopback server needs a local engine")
        marker = f"{FAKE_TAG_VAR}={self.token}".encode()
        tagged: dict[int, int] = {}
        for pid in view.procs():
            try:
                with open(f"/proc/{pid}/environ", "rb") as fh:
                    if marker not in fh.read().split(b"\0"):
                        continue
                with open(f"/proc/{pid}/stat") as fh:
                    tagged[pid] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
        roots = [pid for pid, parent in tagged.items() if parent not in tagged]
        if not roots:
            raise ConnectError(Code.NOT_FOUND, f"process with pid {self.pid} not found")
        for pid in roots:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


# -- Connect services ---------------------------------------------------------------------------


def _event(**kwargs: Any) -> Any:
    ((name, value),) = kwargs.items()
    return process_pb.StartResponse(event=process_pb.ProcessEvent(event=Oneof(name, value)))


def _end_event(code: int) -> Any:
    if 128 < code < 128 + 65:  # killed by a signal: Go's os/exec says -1, "signal: <name>"
        name = (signal.strsignal(code - 128) or f"signal {code - 128}").lower()
        text = f"signal: {name}"
        end = process_pb.ProcessEvent.EndEvent(exit_code=-1, exited=False, status=text, error=text)
    elif code:
        end = process_pb.ProcessEvent.EndEvent(
            exit_code=code, exited=True, status=f"exit status {code}", error=f"exit status {code}"
        )
    else:
        end = process_pb.ProcessEvent.EndEvent(exit_code=0, exited=True, status="exit status 0")
    return _event(end=end)


class ProcessService(process_connect.ProcessSync):
    def __init__(self, server: E2BServer) -> None:
        self.server = server

    def start(self, request: Any, ctx: Any) -> Iterator[Any]:
        sandbox = self.server.rpc_sandbox(ctx)
        if request.has_field("pty"):
            raise ConnectError(Code.UNIMPLEMENTED, "PTY is not implemented by the loopback server")
        process = sandbox.spawn(request.process, stdin=bool(request.stdin))
        yield _event(start=process_pb.ProcessEvent.StartEvent(pid=process.pid))
        try:
            while True:
                try:
                    item = process.events.get(timeout=KEEPALIVE_SECONDS)
                except queue.Empty:
                    yield _event(keepalive=process_pb.ProcessEvent.KeepAlive())
                    continue
                if item[0] == "data":
                    yield _event(data=process_pb.ProcessEvent.DataEvent(output=Oneof(*item[1:])))
                elif item[0] == "end":
                    yield _end_event(item[1])
                    return
                else:
                    raise ConnectError(
                        Code.UNAVAILABLE,
                        f"the connection to sandbox {sandbox.sandbox_id} ended before the "
                        "stream completed",
                    )
        finally:
            process.listening = False

    def list(self, request: Any, ctx: Any) -> Any:
        sandbox = self.server.rpc_sandbox(ctx)
        with sandbox.lock:
            running = [p for p in sandbox.processes.values() if not p.ended]
        return process_pb.ListResponse(
            processes=[process_pb.ProcessInfo(config=p.config, pid=p.pid) for p in running]
        )

    def send_input(self, request: Any, ctx: Any) -> Any:
        process = self.server.rpc_sandbox(ctx).process(request.process)
        match request.input.input if request.input is not None else None:
            case Oneof(field="stdin", value=data):
                process.write_stdin(data)
            case _:
                raise ConnectError(Code.INVALID_ARGUMENT, "only stdin input is supported here")
        return process_pb.SendInputResponse()

    def close_stdin(self, request: Any, ctx: Any) -> Any:
        self.server.rpc_sandbox(ctx).process(request.process).close_stdin()
        return process_pb.CloseStdinResponse()

    def send_signal(self, request: Any, ctx: Any) -> Any:
        process = self.server.rpc_sandbox(ctx).process(request.process)
        sig = signal.SIGTERM if request.signal == process_pb.Signal.SIGTERM else signal.SIGKILL
        process.signal(sig)
        return process_pb.SendSignalResponse()


_STAT_FORMAT = r"%y\t%Y\t%s\t%m\t%M\t%u\t%g\t%T@\t%l\t%p\0"
_FS_SCRIPTS = {
    "stat": r"""[ -e "$1" ] || [ -L "$1" ] || exit 72
exec find "$1" -maxdepth 0 -printf "$2" """,
    "list": r"""[ -e "$1" ] || exit 72
[ -d "$1" ] || exit 73
exec find -H "$1" -mindepth 1 -maxdepth "$3" -printf "$2" """,
    "mkdir": r"""[ -e "$1" ] && exit 79
mkdir -p -- "$1" || exit 76
exec find "$1" -maxdepth 0 -printf "$2" """,
    "move": r"""[ -e "$1" ] || [ -L "$1" ] || exit 72
mv -- "$1" "$3" || exit 76
exec find "$3" -maxdepth 0 -printf "$2" """,
    "remove": r"""[ -e "$1" ] || [ -L "$1" ] || exit 72
exec rm -rf -- "$1" """,
    "check-read": r"""[ -e "$1" ] || exit 72
[ -d "$1" ] && exit 73
[ -r "$1" ] || exit 77
exit 0""",
    "write": r"""[ -d "$1" ] && exit 73
d=$(dirname -- "$1")
mkdir -p -- "$d" 2>/dev/null || exit 76
cat > "$1" """,
}
_FS_ERRORS = {
    72: (Code.NOT_FOUND, "no such file or directory"),
    73: (Code.INVALID_ARGUMENT, "path is a directory or not a directory"),
    76: (Code.INVALID_ARGUMENT, "a parent of the path is not a directory"),
    77: (Code.PERMISSION_DENIED, "permission denied"),
    79: (Code.ALREADY_EXISTS, "path already exists"),
}
_FILE_TYPES = {
    "f": filesystem_pb.FileType.FILE,
    "d": filesystem_pb.FileType.DIRECTORY,
    "l": filesystem_pb.FileType.SYMLINK,
}


def _entries(output: bytes) -> list[Any]:
    entries = []
    for record in output.split(b"\0"):
        if not record:
            continue
        kind, target_kind, size, mode, perms, owner, group, mtime, link, path = record.decode(
            "utf-8", "surrogateescape"
        ).split("\t", 9)
        seconds = float(mtime)
        link_kind = target_kind if target_kind in ("f", "d") else "f"
        fields: dict[str, Any] = {
            "name": path.rstrip("/").rsplit("/", 1)[-1],
            # envd >= 0.6.x: a link's type is its target's, and is_symlink marks the link.
            "type": _FILE_TYPES.get(link_kind if kind == "l" else kind, 0),
            "path": path,
            "size": int(size),
            "mode": int(mode, 8),
            "permissions": perms,
            "owner": owner,
            "group": group,
            "modified_time": Timestamp(seconds=int(seconds), nanos=int(seconds % 1 * 1e9)),
            "is_symlink": kind == "l",
        }
        if kind == "l":
            fields["symlink_target"] = link
        entries.append(filesystem_pb.EntryInfo(**fields))
    return entries


class FilesystemService(filesystem_connect.FilesystemSync):
    def __init__(self, server: E2BServer) -> None:
        self.server = server

    def _op(self, ctx: Any, op: str, path: str, *extra: str) -> bytes:
        sandbox = self.server.rpc_sandbox(ctx)
        target = sandbox.resolve(path)
        result = sandbox.run(["sh", "-c", _FS_SCRIPTS[op], "sh", target, _STAT_FORMAT, *extra])
        if result.exit_code in _FS_ERRORS:
            code, text = _FS_ERRORS[result.exit_code]
            raise ConnectError(code, f"{text}: {target}")
        if result.exit_code != 0:
            raise ConnectError(Code.INTERNAL, f"{op} {target} failed: {result.stderr.strip()}")
        return result.stdout_bytes

    def stat(self, request: Any, ctx: Any) -> Any:
        entries = _entries(self._op(ctx, "stat", request.path))
        return filesystem_pb.StatResponse(entry=entries[0])

    def list_dir(self, request: Any, ctx: Any) -> Any:
        depth = str(request.depth or 1)
        return filesystem_pb.ListDirResponse(
            entries=_entries(self._op(ctx, "list", request.path, depth))
        )

    def make_dir(self, request: Any, ctx: Any) -> Any:
        entries = _entries(self._op(ctx, "mkdir", request.path))
        return filesystem_pb.MakeDirResponse(entry=entries[0])

    def move(self, request: Any, ctx: Any) -> Any:
        sandbox = self.server.rpc_sandbox(ctx)
        entries = _entries(
            self._op(ctx, "move", request.source, sandbox.resolve(request.destination))
        )
        return filesystem_pb.MoveResponse(entry=entries[0])

    def remove(self, request: Any, ctx: Any) -> Any:
        self._op(ctx, "remove", request.path)
        return filesystem_pb.RemoveResponse()


# -- HTTP plumbing ------------------------------------------------------------------------------


class _LimitedReader:
    def __init__(self, raw: Any, length: int) -> None:
        self.raw, self.left = raw, length

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        size = self.left if size is None or size < 0 else min(size, self.left)
        data = self.raw.read(size)
        self.left -= len(data)
        if not data:
            self.left = 0
        return data

    def drain(self) -> None:
        while self.read(1 << 16):
            pass


class _ChunkedReader:
    def __init__(self, raw: Any) -> None:
        self.raw, self.left, self.done = raw, 0, False

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while not self.done and (size is None or size < 0 or len(out) < size):
            if self.left == 0:
                line = self.raw.readline(1024).strip()
                self.left = int(line.split(b";")[0] or b"0", 16)
                if self.left == 0:
                    while self.raw.readline(1024).strip():
                        pass  # trailers
                    self.done = True
                    break
            want = self.left if size is None or size < 0 else min(self.left, size - len(out))
            data = self.raw.read(want)
            if not data:
                self.done = True
                break
            out += data
            self.left -= len(data)
            if self.left == 0:
                self.raw.readline(8)  # CRLF after the chunk
        return bytes(out)

    def drain(self) -> None:
        while self.read(1 << 16):
            pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "e2b-loopback/1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _serve(self) -> None:
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        body: Any = (
            _ChunkedReader(self.rfile)
            if "chunked" in te
            else _LimitedReader(self.rfile, int(self.headers.get("Content-Length") or 0))
        )
        url = urlsplit(self.path)
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command,
            "PATH_INFO": url.path,
            "QUERY_STRING": url.query,
            "SCRIPT_NAME": "",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": str(self.server.server_address[1]),
            "REMOTE_ADDR": self.client_address[0],
            "wsgi.input": body,
            "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http",
            "wsgi.version": (1, 0),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in self.headers.items():
            key = name.upper().replace("-", "_")
            if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ[key] = value
            else:
                environ[f"HTTP_{key}"] = value
        started: dict[str, Any] = {}

        def start_response(status: str, headers: list, exc_info: Any = None) -> Callable:
            started["status"], started["headers"] = status, headers
            return lambda data: None

        result = self.server.app(environ, start_response)  # type: ignore[attr-defined]
        try:
            if isinstance(result, list | tuple):
                payload = b"".join(result)
                self._head(started, length=len(payload))
                self.wfile.write(payload)
            else:
                iterator = iter(result)
                first = next(iterator, None)
                self._head(started, length=None)
                for chunk in [first] if first is not None else []:
                    self._chunk(chunk)
                for chunk in iterator:
                    self._chunk(chunk)
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
        try:
            body.drain()
        except (OSError, ValueError):
            self.close_connection = True

    def _head(self, started: dict[str, Any], *, length: int | None) -> None:
        code, _, reason = started["status"].partition(" ")
        self.send_response(int(code), reason or None)
        names = set()
        for name, value in started["headers"]:
            if name.lower() in ("content-length", "transfer-encoding", "connection"):
                continue
            names.add(name.lower())
            self.send_header(name, value)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> tuple:
    payload = b"" if body is None else json.dumps(body).encode()
    all_headers = dict(headers or {})
    if body is not None:
        all_headers.setdefault("Content-Type", "application/json")
    return status, all_headers, [payload]


def _status_line(status: int) -> str:
    from http import HTTPStatus

    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Error"


# -- the server ---------------------------------------------------------------------------------


class E2BServer:
    """Start with ``with E2BServer(owner=...) as server:``; ``server.url`` serves both planes."""

    def __init__(
        self,
        *,
        owner: str,
        api_key: str = TEST_API_KEY,
        templates: dict[str, Template] | None = None,
        other_keys: Iterable[str] = (),
    ) -> None:
        self.api_key = api_key
        self.api_keys = {api_key, *other_keys}  # e.g. a second team's key
        self.templates = dict(templates or DEFAULT_TEMPLATES)
        self.owner = owner
        self.manager = SandboxManager(owner=owner, provider="docker")
        self.sandboxes: dict[str, FakeSandbox] = {}
        self.ended: dict[str, str] = {}  # sandbox id -> why it ended (killed, timeout, ...)
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._process_app = process_connect.ProcessWSGIApplication(ProcessService(self))
        self._filesystem_app = filesystem_connect.FilesystemWSGIApplication(FilesystemService(self))
        self._http = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._http.app = self  # type: ignore[attr-defined]
        self._threads: list[threading.Thread] = []

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def start(self) -> E2BServer:
        for target, name in ((self._http.serve_forever, "e2b-http"), (self._expiry, "e2b-exp")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def close(self) -> None:
        self._closed.set()
        self._http.shutdown()
        self._http.server_close()
        with self._lock:
            ids = list(self.sandboxes)
        for sandbox_id in ids:
            self.kill(sandbox_id, reason="server closed")
        self.manager.close()

    def __enter__(self) -> E2BServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- test controls --------------------------------------------------------------------
    def fail(
        self,
        method: str,
        path: str,
        status: int,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests matching ``method`` and ``path`` (a regex over
        the whole path) with ``status``, a JSON error body and ``headers``."""
        with self._lock:
            self.faults.append(
                Fault(
                    method.upper(),
                    re.compile(path),
                    status,
                    times,
                    dict(headers or {}),
                    message or f"injected error {status}",
                )
            )

    def expire(self, sandbox_id: str) -> None:
        """End a sandbox as if its timeout had passed right now."""
        with self._lock:
            sandbox = self.sandboxes.get(sandbox_id)
            if sandbox is not None:
                sandbox.end_at = time.time()
        self.kill(sandbox_id, reason="timeout")

    def calls(self, method: str, path: str) -> list[Recorded]:
        pattern = re.compile(path)
        with self._lock:
            return [r for r in self.requests if r.method == method and pattern.fullmatch(r.path)]

    def live(self) -> list[str]:
        with self._lock:
            return [s for s, box in self.sandboxes.items() if not box.killed]

    # -- sandboxes ------------------------------------------------------------------------
    def kill(self, sandbox_id: str, *, reason: str = "killed") -> bool:
        with self._lock:
            sandbox = self.sandboxes.pop(sandbox_id, None)
            if sandbox is None:
                return False
            sandbox.killed = reason
            self.ended[sandbox_id] = reason
        with sandbox.lock:
            processes = list(sandbox.processes.values())
        for process in processes:
            with contextlib.suppress(queue.Full):
                process.events.put_nowait(("gone",))
        with contextlib.suppress(SandboxError):
            sandbox.box.destroy()
        return True

    def _expiry(self) -> None:
        while not self._closed.wait(0.1):
            now = time.time()
            with self._lock:
                due = [
                    s.sandbox_id
                    for s in self.sandboxes.values()
                    if s.state == "running" and s.end_at <= now
                ]
            for sandbox_id in due:
                self.kill(sandbox_id, reason="timeout")

    def rpc_sandbox(self, ctx: Any) -> FakeSandbox:
        sandbox_id = ctx.request_headers.get("e2b-sandbox-id", "")
        with self._lock:
            sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is None:
            raise ConnectError(Code.UNAVAILABLE, f"The sandbox {sandbox_id} was not found")
        return sandbox

    # -- WSGI entry -------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        method = environ["REQUEST_METHOD"]
        envd = path.startswith(
            ("/process.Process/", "/filesystem.Filesystem/", "/health", "/files")
        )
        if not envd:
            self._record(environ)
        fault = self._take_fault(method, path)
        if fault is not None:
            headers = {"Content-Type": "application/json", **fault.headers}
            start_response(_status_line(fault.status), list(headers.items()))
            return [json.dumps({"code": fault.status, "message": fault.message}).encode()]
        try:
            if not envd:
                status, headers, body = self._control_plane(environ)
            elif path.startswith(("/process.Process/", "/filesystem.Filesystem/")):
                self._envd_sandbox(environ)
                app = self._process_app if path.startswith("/process.") else self._filesystem_app
                return app(environ, start_response)
            else:
                status, headers, body = self._envd_http(environ, self._envd_sandbox(environ))
        except _Abort as abort:
            status, headers, body = _json(
                abort.status, {"code": abort.status, "message": abort.message}, abort.headers
            )
        start_response(_status_line(status), list(headers.items()))
        return body

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.method == method and fault.path.fullmatch(path) and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def _envd_sandbox(self, environ: dict[str, Any]) -> FakeSandbox:
        sandbox_id = environ.get("HTTP_E2B_SANDBOX_ID", "")
        with self._lock:
            sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is None or sandbox.state != "running":
            # What the edge proxy answers (plain JSON, also for RPC paths).
            raise _Abort(502, f"The sandbox {sandbox_id} was not found")
        if environ.get("HTTP_X_ACCESS_TOKEN") != sandbox.envd_token:
            raise _Abort(401, "unauthorized access, please provide a valid access token")
        user = _basic_user(environ.get("HTTP_AUTHORIZATION"))
        query_user = parse_qs(environ.get("QUERY_STRING", "")).get("username", [None])[0]
        if (user or query_user or DEFAULT_USER) != DEFAULT_USER:
            raise _Abort(
                400,
                f"user {user or query_user!r}: the loopback server runs everything as the "
                "container's unprivileged user",
            )
        return sandbox

    # -- envd over plain HTTP ---------------------------------------------------------------
    def _envd_http(self, environ: dict[str, Any], sandbox: FakeSandbox) -> tuple:
        method = environ["REQUEST_METHOD"]
        if environ["PATH_INFO"] == "/health":
            return 204, {}, [b""]
        query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        if method == "GET":
            return self._download(sandbox, sandbox.resolve(query.get("path") or ""))
        if method == "POST":
            return self._upload(environ, sandbox, query.get("path"))
        raise _Abort(405, "method not allowed")

    def _download(self, sandbox: FakeSandbox, path: str) -> tuple:
        check = sandbox.run(["sh", "-c", _FS_SCRIPTS["check-read"], "sh", path])
        if check.exit_code == 72:
            raise _Abort(404, f"path '{path}' does not exist")
        if check.exit_code == 73:
            raise _Abort(400, f"path '{path}' is a directory")
        if check.exit_code != 0:
            raise _Abort(403, f"cannot read '{path}'")
        chunks: queue.Queue = queue.Queue(maxsize=64)
        cancelled = threading.Event()

        def on_output(stream: str, data: bytes) -> None:
            if stream != "stdout":
                return
            while True:
                if cancelled.is_set():
                    from apps.sandboxes.stream import StopReading

                    raise StopReading
                try:
                    chunks.put(data, timeout=0.2)
                    return
                except queue.Full:
                    continue

        def produce() -> None:
            # An error (the sandbox went away mid-download) just ends the body early.
            with contextlib.suppress(Exception):
                sandbox.run(["cat", "--", path], on_output=on_output)
            while not cancelled.is_set():
                try:
                    chunks.put(None, timeout=0.2)
                    break
                except queue.Full:
                    continue

        def body() -> Iterator[bytes]:
            threading.Thread(target=produce, daemon=True).start()
            try:
                while (chunk := chunks.get()) is not None:
                    yield chunk
            finally:
                cancelled.set()

        return 200, {"Content-Type": "application/octet-stream"}, body()

    def _upload(self, environ: dict[str, Any], sandbox: FakeSandbox, path: str | None) -> tuple:
        content_type = environ.get("CONTENT_TYPE", "")
        body = environ["wsgi.input"]
        if environ.get("HTTP_CONTENT_ENCODING", "").lower() == "gzip":
            body = _BytesReader(gzip.decompress(_read_all(body)))
        if content_type.startswith("multipart/form-data"):
            boundary = content_type.split("boundary=", 1)[1].strip().strip('"')
            parts = _multipart(_read_all(body), boundary.encode())
            written = []
            for filename, data in parts:
                target = sandbox.resolve(path if path and len(parts) == 1 else filename)
                written.append(self._write(sandbox, target, _BytesReader(data)))
            return _json(200, written)
        if not path:
            raise _Abort(400, "the path query parameter is required for octet-stream uploads")
        return _json(200, [self._write(sandbox, sandbox.resolve(path), body)])

    def _write(self, sandbox: FakeSandbox, path: str, data: Any) -> dict[str, str]:
        result = sandbox.run(["sh", "-c", _FS_SCRIPTS["write"], "sh", path], stdin=data)
        if result.exit_code != 0:
            if "No space left" in result.stderr or "Disk quota" in result.stderr:
                raise _Abort(507, "not enough disk space available")
            if result.exit_code == 73:
                raise _Abort(400, f"path '{path}' is a directory")
            raise _Abort(400, f"cannot write '{path}': {result.stderr.strip()}")
        return {"name": path.rsplit("/", 1)[-1], "type": "file", "path": path}

    # -- control plane --------------------------------------------------------------------
    def _record(self, environ: dict[str, Any]) -> None:
        raw = _read_all(environ["wsgi.input"])
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        headers = {
            k[5:].lower().replace("_", "-"): v for k, v in environ.items() if k.startswith("HTTP_")
        }
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        record = Recorded(environ["REQUEST_METHOD"], environ["PATH_INFO"], query, body, headers)
        environ["e2b.request"] = record
        with self._lock:
            self.requests.append(record)

    def _control_plane(self, environ: dict[str, Any]) -> tuple:
        record: Recorded = environ["e2b.request"]
        method, path, query = record.method, record.path, record.query
        if record.headers.get("x-api-key") not in self.api_keys:
            raise _Abort(401, "Invalid API key, it must start with 'e2b_' and be registered")
        if isinstance(record.body, bytes):
            raise _Abort(400, "the request body is not JSON")
        body = record.body or {}
        if re.fullmatch(r"/(v2/)?sandboxes", path):
            if method == "POST":
                return self._create(body)
            if method == "GET":
                return self._list(query)
        match = re.fullmatch(r"/(?:v2/)?sandboxes/([^/]+)(/[a-z]+)?", path)
        if match:
            sandbox_id, action = unquote(match.group(1)), match.group(2) or ""
            handler = {
                ("GET", ""): self._info,
                ("DELETE", ""): self._delete,
                ("POST", "/timeout"): self._timeout,
                ("POST", "/connect"): self._connect,
                ("POST", "/resume"): self._connect,
                ("POST", "/pause"): self._pause,
                ("GET", "/metrics"): self._metrics,
            }.get((method, action))
            if handler is not None:
                return handler(sandbox_id, body)
        raise _Abort(404, f"{method} {path} is not implemented by the loopback server")

    def _sandbox(self, sandbox_id: str) -> FakeSandbox:
        with self._lock:
            sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is None:
            raise _Abort(404, f"sandbox \"{sandbox_id}\" doesn't exist or you don't have access")
        return sandbox

    def _create(self, body: dict[str, Any]) -> tuple:
        template_id = body.get("templateID") or "base"
        template = self.templates.get(template_id)
        if template is None:
            raise _Abort(404, f"template '{template_id}' not found")
        timeout = int(body.get("timeout") or 15)
        if timeout > MAX_E2B_TIMEOUT:
            raise _Abort(400, "Timeout cannot be greater than 24 hours")
        metadata = {str(k): str(v) for k, v in (body.get("metadata") or {}).items()}
        env_vars = {str(k): str(v) for k, v in (body.get("envVars") or {}).items()}
        sandbox_id = "i" + secrets.token_hex(10)
        config = SandboxConfig(
            image=template.image,
            limits=ResourceLimits(
                memory_mb=template.memory_mb,
                cpu_cores=float(template.cpu_count),
                disk_mb=template.disk_mb,
                timeout_seconds=BACKING_LIFETIME,
            ),
            network_mode="none",
            labels={"e2b-loopback-sandbox": sandbox_id},
            max_output_bytes=64 * 1024,
            output_limit_bytes=1 << 40,
        )
        try:
            box = self.manager.create_sandbox(config)
        except SandboxError as exc:
            raise _Abort(500, f"the loopback server could not start a sandbox: {exc}") from exc
        sandbox = FakeSandbox(
            sandbox_id=sandbox_id,
            template_id=template_id,
            template=template,
            box=box,  # type: ignore[arg-type]
            metadata=metadata,
            env_vars=env_vars,
            allow_internet=body.get("allow_internet_access"),
            end_at=time.time() + timeout,
        )
        with self._lock:
            self.sandboxes[sandbox_id] = sandbox
        return _json(201, self._sandbox_json(sandbox))

    def _sandbox_json(self, sandbox: FakeSandbox) -> dict[str, Any]:
        return {
            "templateID": sandbox.template_id,
            "sandboxID": sandbox.sandbox_id,
            "clientID": sandbox.client_id,
            "envdVersion": ENVD_VERSION,
            "envdAccessToken": sandbox.envd_token,
        }

    def _detail_json(self, sandbox: FakeSandbox, *, token: bool) -> dict[str, Any]:
        detail = {
            "templateID": sandbox.template_id,
            "sandboxID": sandbox.sandbox_id,
            "clientID": sandbox.client_id,
            "startedAt": sandbox.start_iso(),
            "endAt": sandbox.end_iso(),
            "envdVersion": ENVD_VERSION,
            "cpuCount": sandbox.template.cpu_count,
            "memoryMB": sandbox.template.memory_mb,
            "diskSizeMB": sandbox.template.disk_mb,
            "state": sandbox.state,
            "metadata": sandbox.metadata,
        }
        if token:
            detail["envdAccessToken"] = sandbox.envd_token
            if sandbox.allow_internet is not None:
                detail["allowInternetAccess"] = sandbox.allow_internet
        return detail

    def _list(self, query: dict[str, list[str]]) -> tuple:
        wanted: dict[str, str] = {}
        for encoded in query.get("metadata", []):
            for key, value in parse_qsl(encoded, keep_blank_values=True):
                wanted[unquote(key)] = unquote(value)
        states = set(",".join(query.get("state", ["running,paused"])).split(","))
        limit = int((query.get("limit") or ["100"])[0])
        offset = int((query.get("nextToken") or ["0"])[0])
        with self._lock:
            matches = [
                s
                for s in self.sandboxes.values()
                if s.state in states and all(s.metadata.get(k) == v for k, v in wanted.items())
            ]
        matches.sort(key=lambda s: s.started_at)
        page = matches[offset : offset + limit]
        headers = {}
        if offset + limit < len(matches):
            headers["x-next-token"] = str(offset + limit)
        return _json(200, [self._detail_json(s, token=False) for s in page], headers)

    def _info(self, sandbox_id: str, body: dict[str, Any]) -> tuple:
        return _json(200, self._detail_json(self._sandbox(sandbox_id), token=True))

    def _delete(self, sandbox_id: str, body: dict[str, Any]) -> tuple:
        if not self.kill(sandbox_id, reason="killed"):
            raise _Abort(404, f"sandbox \"{sandbox_id}\" doesn't exist or you don't have access")
        return 204, {}, [b""]

    def _timeout(self, sandbox_id: str, body: dict[str, Any]) -> tuple:
        sandbox = self._sandbox(sandbox_id)
        timeout = int(body.get("timeout") or 0)
        if not 0 < timeout <= MAX_E2B_TIMEOUT:
            raise _Abort(400, "Timeout must be between 1 second and 24 hours")
        sandbox.end_at = time.time() + timeout
        return 204, {}, [b""]

    def _connect(self, sandbox_id: str, body: dict[str, Any]) -> tuple:
        sandbox = self._sandbox(sandbox_id)
        timeout = int(body.get("timeout") or 15)
        status = 200
        if sandbox.state == "paused":
            try:
                sandbox.box.start()
            except SandboxError as exc:
                raise _Abort(500, f"resuming failed: {exc}") from exc
            sandbox.state, status = "running", 201
            sandbox.end_at = time.time() + timeout
        else:  # a running sandbox's timeout only ever grows here
            sandbox.end_at = max(sandbox.end_at, time.time() + timeout)
        return _json(status, self._sandbox_json(sandbox))

    def _pause(self, sandbox_id: str, body: dict[str, Any]) -> tuple:
        sandbox = self._sandbox(sandbox_id)
        if sandbox.state == "paused":
            raise _Abort(409, f'sandbox "{sandbox_id}" is already paused')
        sandbox.state = "paused"
        with contextlib.suppress(SandboxError):
            sandbox.box.stop()
        return 204, {}, [b""]

    def _metrics(self, sandbox_id: str, body: dict[str, Any]) -> tuple:
        sandbox = self._sandbox(sandbox_id)
        if sandbox.state != "running":
            return _json(200, [])
        try:
            stats = sandbox.box.get_stats()
        except SandboxError as exc:
            raise _Abort(500, f"metrics unavailable: {exc}") from exc
        cpus = sandbox.template.cpu_count
        now = datetime.now(UTC)
        disk_total = stats.disk_limit_mb or float(sandbox.template.disk_mb)
        return _json(
            200,
            [
                {
                    "timestamp": now.isoformat().replace("+00:00", "Z"),
                    "timestampUnix": int(now.timestamp()),
                    "cpuCount": cpus,
                    "cpuUsedPct": stats.cpu_percent / cpus,
                    "memUsed": int(stats.memory_usage_mb * 2**20),
                    "memTotal": int(stats.memory_limit_mb * 2**20),
                    "memCache": 0,
                    "diskUsed": int(stats.disk_usage_mb * 2**20),
                    "diskTotal": int(disk_total * 2**20),
                }
            ],
        )


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size is None or size < 0 else self.offset + size
        chunk = self.data[self.offset : end]
        self.offset += len(chunk)
        return chunk


def _read_all(reader: Any) -> bytes:
    chunks = []
    while chunk := reader.read(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _multipart(body: bytes, boundary: bytes) -> list[tuple[str, bytes]]:
    """(filename, content) of each part of a multipart/form-data body."""
    parts = []
    for raw in body.split(b"--" + boundary)[1:]:
        if raw.startswith(b"--"):
            break
        head, _, content = raw.partition(b"\r\n\r\n")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        match = re.search(rb'filename="((?:[^"\\]|\\.)*)"', head)
        filename = match.group(1).decode("utf-8", "surrogateescape") if match else ""
        parts.append((filename.replace('\\"', '"'), content))
    return parts


def _basic_user(header: str | None) -> str | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        return base64.b64decode(header[6:]).decode().partition(":")[0] or None
    except ValueError:
        return None


# -- helpers for tests and examples -------------------------------------------------------------


def loopback_options(server: E2BServer, **changes: Any) -> Any:
    """``E2BOptions`` pointing the SDK at ``server`` (explicit URLs: no environment races)."""
    from apps.sandboxes import E2BOptions

    values = {"api_key": server.api_key, "api_url": server.url, "sandbox_url": server.url}
    values.update(changes)
    return E2BOptions(**values)


def ensure_no_proxy() -> None:
    """pyqwest honours HTTP(S)_PROXY even for 127.0.0.1: exempt loopback (idempotent)."""
    for name in ("NO_PROXY", "no_proxy"):
        entries = [e for e in os.environ.get(name, "").split(",") if e]
        for host in ("127.0.0.1", "localhost"):
            if host not in entries:
                entries.append(host)
        os.environ[name] = ",".join(entries)


@contextlib.contextmanager
def real_or_loopback(*, owner: str, out: Callable[[str], None] = print) -> Iterator[Any]:
    """For examples: ``E2BOptions`` for the real E2B when ``E2B_API_KEY`` is set, else for this
    loopback server (started here, with Docker containers behind it). Says which one it is."""
    from apps.sandboxes import E2BOptions

    if os.environ.get("E2B_API_KEY"):
        out("E2B: the real E2B cloud (E2B_API_KEY is set).")
        yield E2BOptions()
        return
    out(
        "E2B: E2B_API_KEY is not set, so this runs against the loopback E2B server "
        "(tests/support/e2b_server.py), the real e2b SDK talking to it over 127.0.0.1, with a "
        "hardened Docker container behind each sandbox. Set E2B_API_KEY to use the real E2B."
    )
    ensure_no_proxy()
    with E2BServer(owner=owner) as server:
        yield loopback_options(server)
