"""Docker Engine provider: hardened containers, kernel-enforced limits, streamed exec and files.

Only this module talks to the Docker SDK for sandboxes. Commands and paths always travel as argv
lists through the Engine API; nothing is ever interpolated into a host shell. File operations
run *inside* the sandbox, as its unprivileged user, through small fixed ``sh`` scripts whose
inputs are positional arguments; so a hostile symlink can at worst point the sandbox at its own
files, never at the host (and the scripts refuse anything resolving outside the workspace).

See docs/sandboxes.md for the design (disk backend, network modes, timeouts, pool, stats).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any

import docker.errors
import requests.exceptions
from docker.types import LogConfig, Mount, Ulimit

import docker

from . import hostdisk, hostnet
from .base import Command, LivenessCheck, OutputCallback, Sandbox, SandboxProvider
from .common import (
    APP_NAME,
    EXEC_TOKEN_VAR,
    KILL_SCRIPT,
    LABEL_APP,
    LABEL_DEADLINE,
    LABEL_ID,
    LABEL_LIMITS,
    LABEL_OWNER,
    LABEL_PREFIX,
    LABEL_PROVIDER,
    TIMEOUT_EXIT_CODE,
    build_argv,
    file_script_error,
    first_line,
)
from .errors import (
    DiskLimitExceeded,
    FileTooLarge,
    ImageNotFound,
    InvalidSandboxConfig,
    PathOutsideWorkspace,
    SandboxError,
    SandboxExists,
    SandboxFileError,
    SandboxNotFound,
    SandboxStateError,
    SandboxTimeout,
    SandboxUnavailable,
    UnsupportedLimit,
)
from .hostview import HostView
from .paths import workspace_path
from .stream import MuxStream, OutputTail, StopReading, decode_output
from .types import (
    DEFAULT_DOCKER_IMAGE,
    DockerOptions,
    EndReason,
    ExecResult,
    FileInfo,
    HealthStatus,
    ResourceLimits,
    SandboxConfig,
    SandboxState,
    SandboxStats,
    validate_sandbox_id,
)

log = logging.getLogger(__name__)

LABEL_VOLUME = LABEL_PREFIX + "volume"
LABEL_NETWORK = LABEL_PREFIX + "network"
LABEL_GROUP = LABEL_PREFIX + "network-group"
LABEL_POOLED = LABEL_PREFIX + "pooled"
LABEL_ROLE = LABEL_PREFIX + "role"
KILL_GRACE_SECONDS = 5.0
FILE_OP_TIMEOUT = 600.0
MAX_LIST_ENTRIES = 100_000
DEFAULT_MAX_READ_BYTES = 1024 * 1024 * 1024
# PID 1 (init) and the container's `sleep` run as this uid, every command as options.user: a
# command may then neither ptrace nor signal init (same uid would allow both without any
# capability: an agent could take over the sandbox's reaper or end the sandbox with `kill 1`).
INIT_USER = "65534:65534"
# Extra life the container's own `sleep` gives beyond the deadline: the reaper is the primary
# enforcer; the sleep is the backstop that ends the container even if every worker died.
BACKSTOP_GRACE_SECONDS = 60

# -- in-sandbox helper scripts (fixed text; every input is a positional argument) -----------
_RESOLVE = r"""
set -u
ws=$1; p=$2
r=$(realpath -m -- "$p" && echo x) || { echo "cannot resolve path" >&2; exit 70; }
r=${r%x}; r=${r%?}
case "$r" in "$ws"|"$ws"/*) ;; *) printf 'resolves to %s\n' "$r" >&2; exit 71;; esac
"""
_WRITE_SCRIPT = (
    _RESOLVE
    + r"""
[ "$r" = "$ws" ] && exit 73
[ -d "$r" ] && exit 73
d=${r%/*}
mkdir -p -- "$d" 2>/dev/null || { [ -d "$d" ] || exit 76; }
t="$d/.sbx-write.$$"
cat > "$t"; s=$?
if [ "$s" -eq 0 ]; then mv -f -- "$t" "$r" && exit 0; s=78; fi
rm -f -- "$t"
[ "$s" -gt 128 ] && exit 79
exit 78
"""
)
_READ_SCRIPT = (
    _RESOLVE
    + r"""
[ -e "$r" ] || exit 72
[ -d "$r" ] && exit 73
[ -f "$r" ] || exit 74
s=$(stat -c %s -- "$r") || exit 72
[ "$s" -gt "$3" ] && { echo "$s" >&2; exit 75; }
exec cat -- "$r"
"""
)
_LIST_SCRIPT = (
    _RESOLVE
    + r"""
[ -e "$r" ] || exit 72
fmt='%y\t%s\t%T@\t%p\0'
if [ -d "$r" ]; then
  if [ "$3" = 1 ]; then exec find "$r" -mindepth 1 -printf "$fmt"; fi
  exec find "$r" -mindepth 1 -maxdepth 1 -printf "$fmt"
fi
exec find "$r" -maxdepth 0 -printf "$fmt"
"""
)
_DELETE_SCRIPT = r"""
set -u
ws=$1; parent=$2; base=$3
rp=$(realpath -m -- "$parent" && echo x) || exit 70
rp=${rp%x}; rp=${rp%?}
case "$rp" in "$ws"|"$ws"/*) ;; *) printf 'resolves to %s\n' "$rp" >&2; exit 71;; esac
r="$rp/$base"
[ -e "$r" ] || [ -L "$r" ] || exit 72
if [ -d "$r" ] && [ ! -L "$r" ]; then
  if [ "$4" = 1 ]; then rm -rf -- "$r" || exit 78; exit 0; fi
  rmdir -- "$r" 2>/dev/null || exit 77
  exit 0
fi
rm -f -- "$r" || exit 78
"""
# Fallback killer for remote engines (no host /proc): same idea as HostView.kill_tagged.
_KILL_SCRIPT = KILL_SCRIPT


_first_line = first_line

# Opt-in (see DockerSandbox._verify_conformance): the security suite's workers turn it on, and
# so can a production deployment that prefers a refused run to an unconfined one.
VERIFY_CONFORMANCE_VAR = "SANDBOX_VERIFY_CONFORMANCE"


def verify_conformance_enabled() -> bool:
    return os.environ.get(VERIFY_CONFORMANCE_VAR, "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def engine_errors(action: str) -> Iterator[None]:
    """Turn transport failures into SandboxUnavailable; leave API errors to the caller."""
    try:
        yield
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise SandboxUnavailable(
            f"The Docker Engine did not answer while trying to {action} ({_first_line(exc)}); "
            "check that dockerd is running and DOCKER_HOST points at it."
        ) from exc
    except docker.errors.DockerException as exc:
        if isinstance(exc, docker.errors.APIError):
            raise
        raise SandboxUnavailable(
            f"The Docker Engine is not reachable ({_first_line(exc)}) while trying to {action}; "
            "start dockerd or set DOCKER_HOST."
        ) from exc


def _status(exc: docker.errors.APIError) -> int:
    return getattr(exc, "status_code", None) or 0


def _parse_user(user: str) -> tuple[int, int]:
    uid, _, gid = user.partition(":")
    try:
        return int(uid), int(gid or uid)
    except ValueError as exc:
        raise InvalidSandboxConfig(
            f"DockerOptions.user must be numeric 'uid:gid' (got {user!r}); names are resolved "
            "inside the image and could map to root."
        ) from exc


class _Exec:
    """One running exec: create, hijack, pump, and its result. No extra engine round trips."""

    def __init__(self, api: docker.APIClient, exec_id: str) -> None:
        self.api = api
        self.exec_id = exec_id
        self.response: Any = None
        self.stream: MuxStream | None = None

    def start(self) -> MuxStream:
        res = self.api._post_json(
            self.api._url("/exec/{0}/start", self.exec_id),
            headers={"Connection": "Upgrade", "Upgrade": "tcp"},
            data={"Tty": False, "Detach": False},
            stream=True,
        )
        self.api._raise_for_status(res)
        self.response = res
        buffered = res.raw._fp.fp  # the BufferedReader http.client parsed the headers from
        raw = buffered.raw
        sock = getattr(raw, "_sock", None) or getattr(raw, "sock", None)
        if sock is None:
            res.close()
            raise SandboxError(
                "This Docker transport (ssh/npipe) cannot stream exec output; use a unix or "
                "tcp DOCKER_HOST."
            )
        sock.setblocking(False)
        # Output that arrived with the 101 response may already sit in that buffer.
        prebuffered = buffered.peek(1 << 20) or b""
        if prebuffered:
            buffered.read(len(prebuffered))
        self.stream = MuxStream(sock, bytes(prebuffered))
        return self.stream

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
        if self.response is not None:
            with contextlib.suppress(Exception):
                self.response.close()

    def exit_code(self, wait: float = 5.0) -> int | None:
        give_up = time.monotonic() + wait
        while True:
            info = self.api.exec_inspect(self.exec_id)
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            if time.monotonic() >= give_up:
                return None
            time.sleep(0.01)


class DockerSandbox(Sandbox):
    provider = "docker"

    def __init__(
        self,
        *,
        backend: DockerProvider,
        sandbox_id: str,
        config: SandboxConfig,
        limits: ResourceLimits,
        container_id: str,
        volume: str,
        network: str | None,
        disk_path: str | None,
        deadline: float,
    ) -> None:
        super().__init__(sandbox_id=sandbox_id, config=config, limits=limits)
        self._backend = backend
        self.api = backend.api(config.docker)
        self.container_id = container_id
        self.volume = volume
        self.network = network
        self.disk_path = disk_path
        self.deadline = deadline
        self._host: HostView | None = None
        self._host_checked = False
        self._oom_kills_seen = 0
        self._cpu_sample: tuple[float, int] | None = None
        self._volume_mountpoint: str | None = None
        self.oom_kills = 0

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._state is SandboxState.RUNNING:
                return
            if self._state is SandboxState.DESTROYED:
                raise SandboxStateError(f"Sandbox {self.id} was destroyed; create a new one.")
            if self.remaining_seconds() <= 0:
                self._mark_ended(EndReason.TIMEOUT, "the sandbox's wall-clock deadline passed")
                raise SandboxTimeout(
                    f"Sandbox {self.id} is past its deadline ({self.limits.timeout_seconds}s)."
                )
            self._state = SandboxState.STARTING
            try:
                with engine_errors(f"start sandbox {self.id}"):
                    self.api.start(self.container_id)
            except docker.errors.NotFound as exc:
                self._state = SandboxState.ERROR
                raise SandboxNotFound(
                    f"The container of sandbox {self.id} no longer exists; create a new one."
                ) from exc
            except docker.errors.APIError as exc:
                self._state = SandboxState.ERROR
                self.end_reason, self.end_message = EndReason.CRASHED, _first_line(exc)
                raise SandboxError(
                    f"Docker could not start sandbox {self.id}: {_first_line(exc)}"
                ) from exc
            except BaseException:
                self._state = SandboxState.ERROR
                raise
            self._state = SandboxState.RUNNING
            self.started_at = time.time()
            self._host_checked = False
            self._host = None
            self._cpu_sample = None
            if self.limits.network_mbps is not None and self.config.network_mode != "none":
                try:
                    view = self._host_view()
                    if view is None:
                        raise SandboxError("no host view of the container")
                    hostnet.apply_bandwidth(view.pid, self.limits.network_mbps)
                except SandboxError:
                    self.destroy()
                    raise
            if verify_conformance_enabled():
                self._verify_conformance()

    def _verify_conformance(self) -> None:
        """Fail closed: prove the hardening from inside before any command runs, and destroy
        a sandbox that is not confined (a flag silently ignored by an engine, a refactor that
        dropped one). Costs one short exec per sandbox, so it is opt-in."""
        from .conformance import ConformanceError, check_sandbox

        problems = check_sandbox(self)
        if problems:
            log.error("sandbox %s failed the conformance check: %s", self.id, problems)
            self.end_reason, self.end_message = EndReason.CRASHED, "not hardened"
            self.destroy()
            raise ConformanceError(self.id, problems)
        log.info("sandbox %s passed the conformance check", self.id)

    def stop(self) -> None:
        with self._lock:
            if self._state in (SandboxState.DESTROYED, SandboxState.STOPPED):
                return
            self._state = SandboxState.STOPPING
            try:
                with engine_errors(f"stop sandbox {self.id}"):
                    self.api.stop(self.container_id, timeout=2)
            except docker.errors.NotFound:
                pass
            self._state = SandboxState.STOPPED
            self._host = None
            self._host_checked = False

    def destroy(self) -> None:
        with self._lock:
            if self._state is SandboxState.DESTROYED:
                return
            problems = self._backend.remove_resources(
                container=self.container_id,
                volume=self.volume,
                network=self.network,
                disk_path=self.disk_path,
                api=self.api,
            )
            self._state = SandboxState.DESTROYED
            if self.end_reason is None:
                self.end_reason = EndReason.DESTROYED
            self._host = None
        self._notify_destroyed()
        if problems:
            raise SandboxError(
                f"Sandbox {self.id} was only partly removed: {'; '.join(problems)}. "
                "reap_orphans() will retry."
            )

    def _mark_ended(self, reason: str, message: str) -> None:
        if self.end_reason is None or self.end_reason == EndReason.DESTROYED:
            self.end_reason, self.end_message = reason, message
        if self._state is not SandboxState.DESTROYED:
            self._state = SandboxState.STOPPED

    def _claim(self, *, sandbox_id: str | None, config: SandboxConfig) -> None:
        if sandbox_id and sandbox_id != self._id:
            validate_sandbox_id(sandbox_id)
            try:
                with engine_errors(f"rename sandbox {self._id}"):
                    self.api.rename(self.container_id, sandbox_id)
            except docker.errors.APIError as exc:
                if _status(exc) == 409:
                    raise SandboxExists(
                        f"A sandbox named {sandbox_id} already exists; it was left untouched "
                        "(attach to it or pick another id).",
                        sandbox_id=sandbox_id,
                    ) from exc
                raise SandboxError(f"Renaming a pooled sandbox failed: {_first_line(exc)}") from exc
            self._id = sandbox_id
        self.config = config

    def _container_gone(self, exc: BaseException) -> SandboxError:
        self._state = SandboxState.ERROR
        self.end_reason = self.end_reason or EndReason.CRASHED
        self.end_message = "the container was removed outside the sandbox layer"
        return SandboxNotFound(
            f"The container of sandbox {self.id} no longer exists (removed outside sandboxweb?); "
            "create a new sandbox."
        )

    def _explain_not_running(self) -> SandboxError:
        """The container stopped under us: find out why and record it."""
        try:
            with engine_errors(f"inspect sandbox {self.id}"):
                info = self.api.inspect_container(self.container_id)
        except docker.errors.NotFound as exc:
            return self._container_gone(exc)
        state = info.get("State", {})
        if state.get("Running"):
            return SandboxError(f"Sandbox {self.id}: the engine refused the command; try again.")
        if state.get("OOMKilled"):
            self._mark_ended(EndReason.OOM, "the container ran out of memory")
        elif time.time() >= self.deadline:
            self._mark_ended(EndReason.TIMEOUT, "the sandbox's wall-clock deadline passed")
        else:
            self._mark_ended(
                EndReason.CRASHED, f"the container exited with status {state.get('ExitCode')}"
            )
        return SandboxStateError(
            f"Sandbox {self.id} is no longer running ({self.end_reason}: {self.end_message})."
        )

    # -- exec ---------------------------------------------------------------------------------
    def _host_view(self) -> HostView | None:
        if not self._host_checked:
            self._host_checked = True
            self._host = None
            if self._backend.is_local(self.config.docker):
                try:
                    info = self.api.inspect_container(self.container_id)
                    self._host = HostView.attach(
                        info["Id"], int(info.get("State", {}).get("Pid") or 0)
                    )
                except (docker.errors.DockerException, requests.exceptions.RequestException):
                    self._host = None
        return self._host

    def _exec_env(self, env: Mapping[str, str] | None, token: str) -> list[str]:
        merged = dict(self.config.env)
        if env:
            merged.update(env)
        merged[EXEC_TOKEN_VAR] = token
        result = []
        for key, value in merged.items():
            if not isinstance(key, str) or not key or "=" in key or "\x00" in key:
                raise InvalidSandboxConfig(f"Invalid environment variable name {key!r}")
            if not isinstance(value, str) or "\x00" in value:
                raise InvalidSandboxConfig(f"Environment variable {key} must be a string")
            result.append(f"{key}={value}")
        return result

    def _run(
        self,
        argv: list[str],
        *,
        timeout: float | None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        stdin: bytes | memoryview | IO[bytes] | None = None,
        on_frame: Any,
    ) -> tuple[int, str, float]:
        """Run argv; returns (exit_code, status, duration_ms) with status eof/timeout/stopped.

        ``timeout`` is clamped to the sandbox deadline; on expiry (or when ``on_frame`` stops
        the stream) every process started by this command is killed.
        """
        self._require_running()
        remaining = self.remaining_seconds()
        if remaining <= 0:
            self._end_by_deadline()
            raise SandboxTimeout(
                f"Sandbox {self.id} reached its wall-clock limit "
                f"({self.limits.timeout_seconds}s); create a new sandbox to continue."
            )
        limit = remaining if timeout is None else min(float(timeout), remaining)
        token = secrets.token_hex(8)
        started = time.monotonic()
        try:
            with engine_errors(f"run a command in sandbox {self.id}"):
                exec_id = self.api.exec_create(
                    self.container_id,
                    argv,
                    stdout=True,
                    stderr=True,
                    stdin=stdin is not None,
                    environment=self._exec_env(env, token),
                    workdir=workdir or self.workspace,
                    user=self.config.docker.user,
                )["Id"]
                run = _Exec(self.api, exec_id)
                try:
                    stream = run.start()
                    stream.set_stdin(stdin)
                    status = stream.run(on_frame, deadline=started + limit)
                    if status != "eof":
                        self._kill_tagged(token)
                        stream.run(lambda _s, _d: None, deadline=time.monotonic() + 5)
                    code = run.exit_code(wait=KILL_GRACE_SECONDS if status != "eof" else 30)
                finally:
                    run.close()
        except docker.errors.NotFound as exc:
            raise self._container_gone(exc) from exc
        except docker.errors.APIError as exc:
            if _status(exc) == 409:
                raise self._explain_not_running() from exc
            raise SandboxError(
                f"Docker refused the command in sandbox {self.id}: {_first_line(exc)}"
            ) from exc
        duration_ms = (time.monotonic() - started) * 1000
        if status == "timeout" and limit >= remaining - 0.05:  # the sandbox deadline bound it
            self._end_by_deadline()
        if code is None:
            code = -1
        return code, status, duration_ms

    def kill_all_processes(self) -> int:
        """Kill every process any command started (background ones, fork bombs...), leaving
        the sandbox itself running. Returns how many were killed (-1: unknown, remote)."""
        self._require_running()
        return self._kill_tagged(None)

    def _kill_tagged(self, token: str | None) -> int:
        """Kill the processes of one command (``token``) or of all commands (None)."""
        marker = f"{EXEC_TOKEN_VAR}={token or ''}".encode()
        view = self._host_view()
        if view is not None:
            try:
                # A fork bomb at its pids limit forks (and fails) nonstop under its CPU quota,
                # holding its memory map locks: each /proc/<pid>/environ read then waits for a
                # throttled holder (measured: 20 reads took 69 s). Frozen, one pass over all of
                # them takes milliseconds; the SIGKILLs land when they thaw, and the second
                # pass catches anything that got away.
                with view.frozen():
                    killed = view.kill_tagged(marker, prefix=token is None, rounds=1)
                return killed + view.kill_tagged(marker, prefix=token is None)
            except OSError:
                pass
        try:
            with engine_errors(f"kill a command in sandbox {self.id}"):
                exec_id = self.api.exec_create(
                    self.container_id,
                    [
                        "sh",
                        "-c",
                        _KILL_SCRIPT,
                        "sh",
                        marker.decode(),
                        "prefix" if token is None else "exact",
                    ],
                    user=self.config.docker.user,
                    environment=["LC_ALL=C"],
                )["Id"]
                self.api.exec_start(exec_id)
                if self.api.exec_inspect(exec_id).get("ExitCode") == 0:
                    return -1
        except (docker.errors.APIError, SandboxUnavailable):
            pass
        if token is None:
            raise SandboxError(f"Could not kill the processes in sandbox {self.id}; destroy it.")
        # Could not kill selectively (e.g. the pids limit is exhausted): end the container.
        log.warning("sandbox %s: killing the container to stop a timed-out command", self.id)
        with (
            contextlib.suppress(docker.errors.APIError, SandboxUnavailable),
            engine_errors(f"kill sandbox {self.id}"),
        ):
            self.api.kill(self.container_id)
        self._mark_ended(EndReason.TIMEOUT, "a timed-out command could not be killed alone")
        return -1

    def _end_by_deadline(self) -> None:
        self._mark_ended(EndReason.TIMEOUT, "the sandbox's wall-clock deadline passed")
        with (
            contextlib.suppress(docker.errors.APIError, SandboxUnavailable),
            engine_errors(f"kill sandbox {self.id}"),
        ):
            self.api.kill(self.container_id)

    def _oom_kill_count(self) -> int | None:
        view = self._host_view()
        if view is not None:
            try:
                return view.oom_kills()
            except OSError:
                pass
        try:
            with engine_errors(f"read memory events of sandbox {self.id}"):
                exec_id = self.api.exec_create(
                    self.container_id,
                    [
                        "cat",
                        "/sys/fs/cgroup/memory/memory.oom_control",
                        "/sys/fs/cgroup/memory.events",
                    ],
                    user=self.config.docker.user,
                )["Id"]
                text = self.api.exec_start(exec_id).decode("utf-8", "replace")
        except (docker.errors.APIError, SandboxUnavailable):
            return None
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return None

    def execute(
        self,
        command: Command,
        args: Sequence[str] | None = None,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        stdin: bytes | str | None = None,
        on_output: OutputCallback | None = None,
        max_output_bytes: int | None = None,
    ) -> ExecResult:
        argv = build_argv(command, args)
        if workdir is not None and not workdir.startswith("/"):
            workdir = workspace_path(workdir, self.workspace)
        if timeout is not None and timeout <= 0:
            raise InvalidSandboxConfig(f"timeout must be > 0 seconds (got {timeout!r})")
        cap = max_output_bytes or self.config.max_output_bytes
        hard_limit = max(self.config.output_limit_bytes, cap)
        tails = {"stdout": OutputTail(cap), "stderr": OutputTail(cap)}
        total = 0

        def on_frame(stream: str, data: memoryview) -> None:
            nonlocal total
            total += len(data)
            tails[stream].feed(data)
            if on_output is not None:
                on_output(stream, bytes(data))
            if total > hard_limit:
                raise StopReading

        data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
        code, status, duration_ms = self._run(
            argv, timeout=timeout, env=env, workdir=workdir, stdin=data, on_frame=on_frame
        )
        end_reason = None
        oom = False
        if status == "timeout":
            end_reason, code = EndReason.TIMEOUT, TIMEOUT_EXIT_CODE
        elif status == "stopped":
            end_reason = EndReason.OUTPUT_LIMIT
        elif code == 137:
            kills = self._oom_kill_count()
            if kills is not None and kills > self._oom_kills_seen:
                self._oom_kills_seen = kills
                self.oom_kills = kills
                oom, end_reason = True, EndReason.OOM
        out, err = tails["stdout"], tails["stderr"]
        out_bytes, err_bytes = out.value(), err.value()
        return ExecResult(
            exit_code=code,
            stdout=decode_output(out_bytes, truncated=out.truncated),
            stderr=decode_output(err_bytes, truncated=err.truncated),
            duration_ms=round(duration_ms, 3),
            timed_out=status == "timeout",
            truncated=out.truncated or err.truncated,
            oom_killed=oom,
            end_reason=end_reason,
            stdout_bytes=out_bytes,
            stderr_bytes=err_bytes,
            output_bytes_total=total,
        )

    # -- files --------------------------------------------------------------------------------
    def _helper(
        self,
        script: str,
        args: list[str],
        *,
        stdin: bytes | memoryview | IO[bytes] | None = None,
        on_stdout: Any = None,
    ) -> tuple[int, bytes]:
        errors = OutputTail(4096)

        def on_frame(stream: str, data: memoryview) -> None:
            if stream == "stderr":
                errors.feed(data)
            elif on_stdout is not None:
                on_stdout(data)

        code, status, _ = self._run(
            ["sh", "-c", script, "sh", *args],
            timeout=FILE_OP_TIMEOUT,
            env={"LC_ALL": "C"},
            workdir=self.workspace,
            stdin=stdin,
            on_frame=on_frame,
        )
        if status == "timeout":
            raise SandboxTimeout(f"A file operation in sandbox {self.id} timed out.")
        return code, errors.value()

    def _file_error(self, code: int, path: str, stderr: bytes, *, limit: int = 0) -> SandboxError:
        detail = stderr.decode("utf-8", "replace").strip()
        known = file_script_error(
            code, path, detail, sandbox_id=self.id, workspace=self.workspace, limit=limit
        )
        if known is not None:
            return known
        if "No space left" in detail or "Disk quota" in detail:
            return DiskLimitExceeded(
                f"The workspace of sandbox {self.id} is full (disk limit "
                f"{self.limits.disk_mb} MB); delete files or raise disk_mb."
            )
        if code == 79 or "File too large" in detail:
            return FileTooLarge(f"{path} exceeds the sandbox's maximum file size.")
        return SandboxFileError(f"File operation on {path} failed (exit {code}): {detail}")

    def write_file(self, path: str, content: str | bytes | IO[bytes]) -> None:
        target = workspace_path(path, self.workspace)
        if target == self.workspace:
            raise SandboxFileError(f"{path} is the workspace directory itself; name a file.")
        if isinstance(content, str):
            payload: Any = content.encode("utf-8")
        elif isinstance(content, bytes | bytearray | memoryview):
            payload = memoryview(content)
        elif hasattr(content, "read"):
            payload = content
        else:
            raise TypeError(f"content must be str, bytes or a binary file, not {type(content)}")
        disk_bytes = (self.limits.disk_mb or 0) * 1024 * 1024
        if disk_bytes and isinstance(payload, bytes | memoryview) and len(payload) > disk_bytes:
            raise FileTooLarge(
                f"{path}: {len(payload)} bytes is more than the workspace holds "
                f"(disk limit {self.limits.disk_mb} MB)."
            )
        code, err = self._helper(_WRITE_SCRIPT, [self.workspace, target], stdin=payload)
        if code != 0:
            raise self._file_error(code, path, err)

    def read_file(self, path: str, *, max_bytes: int = DEFAULT_MAX_READ_BYTES) -> bytes:
        chunks: list[bytes] = []
        self._read(path, lambda data: chunks.append(bytes(data)), max_bytes)
        return b"".join(chunks)

    def read_file_to(self, path: str, destination: IO[bytes], *, max_bytes: int = 1 << 62) -> int:
        return self._read(path, destination.write, max_bytes)

    def _read(self, path: str, sink: Any, max_bytes: int) -> int:
        target = workspace_path(path, self.workspace)
        received = 0

        def on_stdout(data: memoryview) -> None:
            nonlocal received
            received += len(data)
            if received > max_bytes:  # the file grew after the size check
                raise StopReading
            sink(data)

        code, err = self._helper(
            _READ_SCRIPT, [self.workspace, target, str(max_bytes)], on_stdout=on_stdout
        )
        if received > max_bytes:
            raise FileTooLarge(f"{path} grew beyond {max_bytes} bytes while being read.")
        if code != 0:
            raise self._file_error(code, path, err, limit=max_bytes)
        return received

    def list_files(self, path: str = ".", recursive: bool = False) -> list[FileInfo]:
        target = workspace_path(path, self.workspace)
        buffer = bytearray()
        entries: list[FileInfo] = []

        def on_stdout(data: memoryview) -> None:
            buffer.extend(data)
            while True:
                end = buffer.find(b"\0")
                if end < 0:
                    return
                record = bytes(buffer[:end])
                del buffer[: end + 1]
                kind, size, mtime, name = record.split(b"\t", 3)
                entries.append(
                    FileInfo(
                        path=name.decode("utf-8", "surrogateescape"),
                        size=int(size),
                        is_dir=kind == b"d",
                        mtime=float(mtime),
                        is_symlink=kind == b"l",
                    )
                )
                if len(entries) > MAX_LIST_ENTRIES:
                    raise StopReading

        code, err = self._helper(
            _LIST_SCRIPT, [self.workspace, target, "1" if recursive else "0"], on_stdout=on_stdout
        )
        if len(entries) > MAX_LIST_ENTRIES:
            raise SandboxFileError(
                f"{path} holds more than {MAX_LIST_ENTRIES} entries; list a subdirectory."
            )
        if code != 0:
            raise self._file_error(code, path, err)
        return sorted(entries, key=lambda info: info.path)

    def delete_file(self, path: str, *, recursive: bool = False) -> None:
        target = workspace_path(path, self.workspace)
        if target == self.workspace:
            raise PathOutsideWorkspace("The workspace itself cannot be deleted; name a file in it.")
        parent, _, base = target.rpartition("/")
        code, err = self._helper(
            _DELETE_SCRIPT, [self.workspace, parent or "/", base, "1" if recursive else "0"]
        )
        if code != 0:
            raise self._file_error(code, path, err)

    # -- observation --------------------------------------------------------------------------
    def get_stats(self) -> SandboxStats:
        self._require_running()
        view = self._host_view()
        now = time.time()
        if view is not None:
            try:
                return self._stats_from_host(view, now)
            except OSError:
                self._host, self._host_checked = None, True
        return self._stats_from_engine(now)

    def _cpu_percent(self, now: float, usage_ns: int) -> float:
        previous = self._cpu_sample
        self._cpu_sample = (now, usage_ns)
        if previous is None:
            since = self.started_at or now
            return round(usage_ns / 1e9 / max(now - since, 1e-3) * 100, 2)
        elapsed = now - previous[0]
        if elapsed <= 0:
            return 0.0
        return round(max(0, usage_ns - previous[1]) / 1e9 / elapsed * 100, 2)

    def _disk_usage(self) -> tuple[float, float | None]:
        mountpoint = self._volume_path()
        if mountpoint:
            try:
                st = os.statvfs(mountpoint)
                used = (st.f_blocks - st.f_bfree) * st.f_frsize
                total = st.f_blocks * st.f_frsize
                if self.limits.disk_mb is None:
                    return used / 2**20, None
                return used / 2**20, total / 2**20
            except OSError:
                pass
        _code, output = 0, bytearray()
        try:
            _code, _ = self._helper(
                'df -Pk -- "$1" | tail -n 1', [self.workspace], on_stdout=output.extend
            )
            fields = output.decode().split()
            return int(fields[2]) / 1024, (
                int(fields[1]) / 1024 if self.limits.disk_mb is not None else None
            )
        except (SandboxError, ValueError, IndexError):
            return 0.0, None

    def _volume_path(self) -> str | None:
        if self._volume_mountpoint is None and self._backend.is_local(self.config.docker):
            try:
                info = self.api.inspect_volume(self.volume)
                self._volume_mountpoint = info.get("Mountpoint") or ""
            except docker.errors.APIError:
                self._volume_mountpoint = ""
        if self._volume_mountpoint and os.path.ismount(self._volume_mountpoint):
            return self._volume_mountpoint
        if self._volume_mountpoint and self.limits.disk_mb is None:
            return self._volume_mountpoint if os.path.isdir(self._volume_mountpoint) else None
        return None

    def _stats_from_host(self, view: HostView, now: float) -> SandboxStats:
        rx, tx = view.network_bytes()
        disk_used, disk_total = self._disk_usage()
        return SandboxStats(
            memory_usage_mb=round(view.memory_usage() / 2**20, 2),
            memory_limit_mb=round(view.memory_limit() / 2**20, 2),
            cpu_percent=self._cpu_percent(now, view.cpu_usage_ns()),
            disk_usage_mb=round(disk_used, 2),
            network_rx_mb=round(rx / 2**20, 4),
            network_tx_mb=round(tx / 2**20, 4),
            pids=view.pids_current(),
            disk_limit_mb=round(disk_total, 2) if disk_total is not None else None,
            timestamp=now,
        )

    def _stats_from_engine(self, now: float) -> SandboxStats:
        try:
            with engine_errors(f"read stats of sandbox {self.id}"):
                raw = self.api.stats(self.container_id, stream=False, one_shot=True)
        except docker.errors.NotFound as exc:
            raise self._container_gone(exc) from exc
        memory = raw.get("memory_stats", {})
        stat = memory.get("stats", {})
        usage = memory.get("usage", 0) - stat.get(
            "total_inactive_file", stat.get("inactive_file", 0)
        )
        networks = raw.get("networks") or {}
        rx = sum(n.get("rx_bytes", 0) for n in networks.values())
        tx = sum(n.get("tx_bytes", 0) for n in networks.values())
        cpu_ns = raw.get("cpu_stats", {}).get("cpu_usage", {}).get("total_usage", 0)
        disk_used, disk_total = self._disk_usage()
        return SandboxStats(
            memory_usage_mb=round(max(usage, 0) / 2**20, 2),
            memory_limit_mb=round(memory.get("limit", 0) / 2**20, 2),
            cpu_percent=self._cpu_percent(now, cpu_ns),
            disk_usage_mb=round(disk_used, 2),
            network_rx_mb=round(rx / 2**20, 4),
            network_tx_mb=round(tx / 2**20, 4),
            pids=int(raw.get("pids_stats", {}).get("current", 0)),
            disk_limit_mb=round(disk_total, 2) if disk_total is not None else None,
            timestamp=now,
        )

    def health_check(self) -> HealthStatus:
        if self._state is not SandboxState.RUNNING:
            reason = f": {self.end_reason} ({self.end_message})" if self.end_reason else ""
            return HealthStatus(False, f"sandbox is {self._state.value}{reason}")
        try:
            with engine_errors(f"inspect sandbox {self.id}"):
                info = self.api.inspect_container(self.container_id)
        except docker.errors.NotFound as exc:
            self._container_gone(exc)
            return HealthStatus(False, f"container of sandbox {self.id} no longer exists")
        except SandboxUnavailable as exc:
            return HealthStatus(False, str(exc))
        if not info.get("State", {}).get("Running"):
            error = self._explain_not_running()
            return HealthStatus(False, str(error))
        try:
            result = self.execute(["true"], timeout=5)
        except SandboxError as exc:
            return HealthStatus(False, str(exc))
        if result.exit_code != 0:
            return HealthStatus(False, f"probe command failed with exit {result.exit_code}")
        return HealthStatus(True, "ok")


class DockerProvider(SandboxProvider):
    name = "docker"
    supports_pool = True

    def __init__(self, *, owner: str, options: DockerOptions | None = None) -> None:
        super().__init__(owner=owner)
        self.options = options or DockerOptions()
        self._clients: dict[tuple[str | None, float], docker.DockerClient] = {}
        self._clients_lock = threading.Lock()
        self._group_locks: dict[str, threading.Lock] = {}
        self._egress_ready: set[str] = set()

    # -- engine -------------------------------------------------------------------------------
    def client(self, options: DockerOptions | None = None) -> docker.DockerClient:
        options = options or self.options
        key = (options.base_url, options.api_timeout_seconds)
        with self._clients_lock:
            client = self._clients.get(key)
            if client is None:
                with engine_errors("connect"):
                    if options.base_url:
                        client = docker.DockerClient(
                            base_url=options.base_url,
                            timeout=int(options.api_timeout_seconds),
                            version="auto",
                        )
                    else:
                        client = docker.from_env(timeout=int(options.api_timeout_seconds))
                self._clients[key] = client
            return client

    def api(self, options: DockerOptions | None = None) -> docker.APIClient:
        return self.client(options).api

    def is_local(self, options: DockerOptions | None = None) -> bool:
        options = options or self.options
        url = options.base_url or os.environ.get("DOCKER_HOST") or "unix://"
        return url.startswith("unix://")

    def close(self) -> None:
        with self._clients_lock:
            for client in self._clients.values():
                with contextlib.suppress(Exception):
                    client.close()
            self._clients.clear()

    # -- create -------------------------------------------------------------------------------
    def _labels(
        self,
        sandbox_id: str,
        deadline: float,
        config: SandboxConfig,
        limits: ResourceLimits,
        pooled: bool,
    ) -> dict[str, str]:
        for key in config.labels:
            if key.startswith(LABEL_PREFIX):
                raise InvalidSandboxConfig(
                    f"Label {key!r} is reserved: keys starting with {LABEL_PREFIX} belong to "
                    "the sandbox layer."
                )
        labels = dict(config.labels)
        labels.update(
            {
                LABEL_APP: APP_NAME,
                LABEL_ID: sandbox_id,
                LABEL_OWNER: self.owner,
                LABEL_DEADLINE: str(int(deadline)),
                LABEL_PROVIDER: self.name,
                LABEL_LIMITS: json.dumps(limits.as_dict(), sort_keys=True),
            }
        )
        if pooled:
            labels[LABEL_POOLED] = "1"
        return labels

    def disk_backend(self, options: DockerOptions) -> str:
        if options.disk_backend != "auto":
            return options.disk_backend
        if self.is_local(options) and hostdisk.loop_backend_problem(options.disk_dir) is None:
            return "loop"
        return "tmpfs"

    def create(
        self,
        config: SandboxConfig,
        limits: ResourceLimits,
        *,
        pooled: bool = False,
        lifetime_slack: float = 0.0,
    ) -> DockerSandbox:
        options = config.docker
        api = self.api(options)
        uid, gid = _parse_user(options.user)
        sandbox_id = config.sandbox_id or f"docker-{secrets.token_hex(8)}"
        validate_sandbox_id(sandbox_id)
        now = time.time()
        deadline = now + limits.timeout_seconds + lifetime_slack
        labels = self._labels(sandbox_id, deadline, config, limits, pooled)
        image = config.image or DEFAULT_DOCKER_IMAGE
        if limits.network_mbps is not None and config.network_mode != "none":
            problem = hostnet.shaping_problem() or (
                None if self.is_local(options) else "the Docker Engine is not on this host"
            )
            if problem:
                raise UnsupportedLimit(
                    f"network_mbps={limits.network_mbps} cannot be enforced: {problem}. "
                    "Remove the limit or use network_mode='none'."
                )

        volume = f"sbxv-{secrets.token_hex(8)}"
        disk_path: str | None = None
        network_name: str | None = None
        created_volume = created_container = False
        container_id = ""
        try:
            network_name, network_kwargs = self._network_for(config, sandbox_id, labels, api)
            driver_opts, disk_path = self._workspace_volume(options, limits, volume, uid, gid)
            with engine_errors(f"create the workspace of {sandbox_id}"):
                api.create_volume(
                    volume, driver="local", driver_opts=driver_opts, labels=dict(labels)
                )
            created_volume = True
            labels[LABEL_VOLUME] = volume
            if network_name:
                labels[LABEL_NETWORK] = network_name
            host_config = api.create_host_config(
                **self._host_config(config, limits, volume, network_kwargs)
            )
            lifetime = int(limits.timeout_seconds + lifetime_slack + BACKSTOP_GRACE_SECONDS)
            with engine_errors(f"create sandbox {sandbox_id}"):
                container_id = api.create_container(
                    image,
                    command=["sleep", str(lifetime)],
                    name=sandbox_id,
                    user=INIT_USER,
                    working_dir=config.workdir,
                    labels=labels,
                    host_config=host_config,
                    hostname="sandbox",
                )["Id"]
            created_container = True
        except docker.errors.ImageNotFound as exc:
            self._cleanup_failed_create(
                api, volume if created_volume else None, disk_path, network_name
            )
            raise ImageNotFound(
                f"Image {image} is not present on the Docker Engine; build or pull it first "
                "(make image / python -m apps.sandboxes.images)."
            ) from exc
        except docker.errors.APIError as exc:
            self._cleanup_failed_create(
                api, volume if created_volume else None, disk_path, network_name
            )
            if _status(exc) == 409 and not created_container:
                raise SandboxExists(
                    f"A sandbox named {sandbox_id} already exists; it was left untouched "
                    "(attach to it, or choose another id).",
                    sandbox_id=sandbox_id,
                ) from exc
            if _status(exc) == 400 and "cpu" in str(exc).lower():
                raise InvalidSandboxConfig(
                    f"cpu_cores={limits.cpu_cores} is not possible on this host: {_first_line(exc)}"
                ) from exc
            raise SandboxError(
                f"Docker could not create sandbox {sandbox_id}: {_first_line(exc)}"
            ) from exc
        except BaseException:
            self._cleanup_failed_create(
                api, volume if created_volume else None, disk_path, network_name
            )
            raise
        return DockerSandbox(
            backend=self,
            sandbox_id=sandbox_id,
            config=config,
            limits=limits,
            container_id=container_id,
            volume=volume,
            network=network_name if config.network_mode == "isolated" else None,
            disk_path=disk_path,
            deadline=deadline,
        )

    def _cleanup_failed_create(
        self, api: docker.APIClient, volume: str | None, disk_path: str | None, network: str | None
    ) -> None:
        self.remove_resources(
            container=None, volume=volume, network=None, disk_path=disk_path, api=api
        )
        if network and network.startswith("sbxi-"):
            self.release_group_network(api, network)

    def _host_config(
        self,
        config: SandboxConfig,
        limits: ResourceLimits,
        volume: str,
        network_kwargs: dict[str, Any],
    ) -> dict[str, Any]:
        options = config.docker
        memory = limits.memory_bytes
        # Per-file cap just above the workspace size: ENOSPC (clear) always comes first, the
        # ulimit only stops files that could never fit anyway.
        fsize = (limits.disk_mb + options.tmp_size_mb) * 2**20 if limits.disk_mb else -1
        kwargs: dict[str, Any] = {  # the hardening; conformance.py checks every field
            "mounts": [Mount(target=config.workdir, source=volume, type="volume")],
            "tmpfs": {"/tmp": f"rw,nosuid,nodev,noexec,size={options.tmp_size_mb}m,mode=1777"},  # noqa: S108
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "privileged": False,
            "pids_limit": limits.max_processes,
            "mem_limit": memory,
            "memswap_limit": memory,
            "nano_cpus": int(limits.cpu_cores * 1e9),
            "init": True,
            "restart_policy": {"Name": "no"},
            "log_config": LogConfig(type="json-file", config={"max-size": "1m", "max-file": "1"}),
            "ulimits": [
                Ulimit(name="nofile", soft=options.nofile, hard=options.nofile),
                Ulimit(name="fsize", soft=fsize, hard=fsize),
                Ulimit(name="core", soft=0, hard=0),
            ],
            "ipc_mode": "private",
            "cgroupns": "private",
            "shm_size": 16 * 1024 * 1024,
            "network_mode": network_kwargs["network_mode"],
        }
        for key in ("dns", "dns_opt"):
            if network_kwargs.get(key) is not None:
                kwargs[key] = network_kwargs[key]
        if options.runtime:
            kwargs["runtime"] = options.runtime
        return kwargs

    def _workspace_volume(
        self, options: DockerOptions, limits: ResourceLimits, volume: str, uid: int, gid: int
    ) -> tuple[dict[str, str], str | None]:
        if limits.disk_mb is None:
            return {}, None
        backend = self.disk_backend(options)
        if backend == "loop":
            problem = hostdisk.loop_backend_problem(options.disk_dir) or (
                None if self.is_local(options) else "the Docker Engine is not on this host"
            )
            if problem:
                raise UnsupportedLimit(
                    f"disk_mb cannot be enforced with the loop backend: {problem}. "
                    "Use DockerOptions(disk_backend='tmpfs') or disk_mb=None."
                )
            disk = hostdisk.create_loop_disk(
                options.disk_dir, volume, limits.disk_mb, uid=uid, gid=gid
            )
            return {"type": "ext4", "device": disk.device, "o": "nosuid,nodev,discard"}, disk.path
        return {
            "type": "tmpfs",
            "device": "tmpfs",
            "o": f"size={limits.disk_mb}m,uid={uid},gid={gid},mode=0755,nosuid,nodev",
        }, None

    # -- networks -----------------------------------------------------------------------------
    def _network_for(
        self, config: SandboxConfig, sandbox_id: str, labels: dict[str, str], api: docker.APIClient
    ) -> tuple[str | None, dict[str, Any]]:
        mode = config.network_mode
        if mode == "none":
            return None, {"network_mode": "none"}
        hostnet.ensure_rules(config.docker.blocked_cidrs)
        if mode == "bridge":
            name = hostnet.check_bridge_name(config.docker.egress_network)
            self._ensure_egress_network(api, name)
            return name, {"network_mode": name}
        group = config.network_group or sandbox_id
        labels[LABEL_GROUP] = group
        name = self.group_network_name(group)
        self._ensure_group_network(api, name, group)
        # Internal networks must not resolve outside names either (embedded DNS would forward
        # queries from the host namespace on Docker < 26): point forwarding at nowhere, and
        # fail fast (1 s) instead of the resolver's default 20 s per lookup.
        return name, {
            "network_mode": name,
            "dns": ["127.0.0.1"],
            "dns_opt": ["timeout:1", "attempts:1"],
        }

    def group_network_name(self, group: str) -> str:
        digest = hashlib.sha256(f"{self.owner}\0{group}".encode()).hexdigest()[:10]
        return f"sbxi-{digest}"

    def _group_lock(self, name: str) -> threading.Lock:
        with self._clients_lock:
            return self._group_locks.setdefault(name, threading.Lock())

    def _ensure_group_network(self, api: docker.APIClient, name: str, group: str) -> None:
        with self._group_lock(name), engine_errors("create an isolated network"):
            try:
                api.inspect_network(name)
                return
            except docker.errors.NotFound:
                pass
            try:
                api.create_network(
                    name,
                    driver="bridge",
                    internal=True,
                    check_duplicate=True,
                    labels={
                        LABEL_APP: APP_NAME,
                        LABEL_OWNER: self.owner,
                        LABEL_GROUP: group,
                        LABEL_ROLE: "isolated",
                    },
                    options={
                        "com.docker.network.bridge.name": name,
                        "com.docker.network.bridge.enable_icc": "true",
                    },
                )
            except docker.errors.APIError as exc:
                if _status(exc) != 409:
                    raise

    def _ensure_egress_network(self, api: docker.APIClient, name: str) -> None:
        if name in self._egress_ready:
            return
        with self._group_lock(name):
            with engine_errors("create the egress network"):
                try:
                    api.inspect_network(name)
                except docker.errors.NotFound:
                    try:
                        api.create_network(
                            name,
                            driver="bridge",
                            check_duplicate=True,
                            labels={LABEL_APP: APP_NAME, LABEL_ROLE: "egress"},
                            options={
                                "com.docker.network.bridge.name": name,
                                "com.docker.network.bridge.enable_icc": "false",
                                "com.docker.network.bridge.enable_ip_masquerade": "true",
                            },
                        )
                    except docker.errors.APIError as exc:
                        if _status(exc) != 409:
                            raise
            self._egress_ready.add(name)

    def release_group_network(self, api: docker.APIClient, name: str) -> None:
        """Remove an isolated network once no container uses it."""
        with self._group_lock(name):
            try:
                with engine_errors("remove an isolated network"):
                    info = api.inspect_network(name)
                    if info.get("Containers"):
                        return
                    api.remove_network(name)
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if _status(exc) in (403, 409):  # a new member joined meanwhile
                    return
                raise

    # -- removal ------------------------------------------------------------------------------
    def remove_resources(
        self,
        *,
        container: str | None,
        volume: str | None,
        network: str | None,
        disk_path: str | None,
        api: docker.APIClient | None = None,
    ) -> list[str]:
        """Remove container, volume, network, disk - in that order. Returns what failed."""
        api = api or self.api()
        problems: list[str] = []
        if container:
            try:
                with engine_errors("remove a sandbox container"):
                    api.remove_container(container, force=True, v=False)
            except docker.errors.NotFound:
                pass
            except (docker.errors.APIError, SandboxUnavailable) as exc:
                if "already in progress" not in str(exc):
                    problems.append(f"container: {_first_line(exc)}")
        if volume:
            for attempt in range(20):
                try:
                    with engine_errors("remove a sandbox volume"):
                        api.remove_volume(volume, force=False)
                    break
                except docker.errors.NotFound:
                    break
                except (docker.errors.APIError, SandboxUnavailable) as exc:
                    if _status(exc) == 409 and attempt < 19:  # still in use for a moment
                        time.sleep(0.05)
                        continue
                    problems.append(f"volume {volume}: {_first_line(exc)}")
                    break
        if network:
            try:
                self.release_group_network(api, network)
            except (docker.errors.APIError, SandboxUnavailable) as exc:
                problems.append(f"network {network}: {_first_line(exc)}")
        if disk_path:
            try:
                hostdisk.release_loop_disk(disk_path)
            except OSError as exc:
                problems.append(f"disk image {disk_path}: {exc.strerror}")
        return problems

    def reap(
        self,
        *,
        now: float,
        is_live: LivenessCheck | None,
        keep_ids: set[str],
        grace_seconds: float = 120.0,
    ) -> list[str]:
        api = self.api()
        owner_filter = [f"{LABEL_APP}={APP_NAME}", f"{LABEL_OWNER}={self.owner}"]
        reaped: list[str] = []
        with engine_errors("list sandboxes"):
            containers = api.containers(all=True, filters={"label": owner_filter})
        for entry in containers:
            labels = entry.get("Labels") or {}
            name = (entry.get("Names") or ["/"])[0].lstrip("/")
            if name in keep_ids:
                continue
            try:
                deadline = float(labels.get(LABEL_DEADLINE, "0"))
            except ValueError:
                deadline = 0.0
            expired = deadline <= now
            idle_pooled = labels.get(LABEL_POOLED) == "1" and name == labels.get(LABEL_ID)
            dead = False
            if is_live is not None and not idle_pooled and not expired:
                view = dict(labels)
                view[LABEL_ID] = name
                dead = not is_live(view)
            if not (expired or dead):
                continue
            volume = labels.get(LABEL_VOLUME)
            network = labels.get(LABEL_NETWORK)
            problems = self.remove_resources(
                container=entry["Id"],
                volume=volume,
                network=network if network and network.startswith("sbxi-") else None,
                disk_path=self._disk_path_for(volume),
                api=api,
            )
            if problems:
                log.warning("reaping %s left: %s", name, "; ".join(problems))
            reaped.append(name)
        self._reap_leftovers(api, owner_filter, now - grace_seconds)
        return reaped

    def _disk_path_for(self, volume: str | None) -> str | None:
        if not volume:
            return None
        return os.path.join(self.options.disk_dir, volume + hostdisk.IMAGE_SUFFIX)

    def _reap_leftovers(
        self, api: docker.APIClient, owner_filter: list[str], cutoff: float
    ) -> None:
        """Volumes and networks of this owner no container uses; disk images with no volume."""
        with engine_errors("list sandbox volumes"):
            volumes = (
                api.volumes(filters={"label": owner_filter, "dangling": True}).get("Volumes") or []
            )
        for volume in volumes:
            if _docker_time(volume.get("CreatedAt")) < cutoff:
                self.remove_resources(
                    container=None,
                    volume=volume["Name"],
                    network=None,
                    disk_path=self._disk_path_for(volume["Name"]),
                    api=api,
                )
        with engine_errors("list sandbox networks"):
            networks = api.networks(filters={"label": owner_filter})
        for network in networks:
            if (
                network.get("Name", "").startswith("sbxi-")
                and _docker_time(network.get("Created")) < cutoff
            ):
                with contextlib.suppress(docker.errors.APIError):
                    self.release_group_network(api, network["Name"])
        if os.path.isdir(self.options.disk_dir) and os.access(self.options.disk_dir, os.W_OK):
            with engine_errors("list volumes"):
                known = {v["Name"] for v in (api.volumes().get("Volumes") or [])}
            for path in hostdisk.orphan_images(
                self.options.disk_dir, known_volumes=known, older_than=cutoff
            ):
                hostdisk.release_loop_disk(path)

    def attach(self, sandbox_id: str, config: SandboxConfig) -> DockerSandbox:
        """Wrap an existing sandbox container of this owner (e.g. found after a duplicate task
        delivery). Its limits, volume, network and deadline come from its labels; ``config``
        supplies what is never stored on the container (env)."""
        api = self.api(config.docker)
        try:
            with engine_errors(f"inspect sandbox {sandbox_id}"):
                info = api.inspect_container(validate_sandbox_id(sandbox_id))
        except docker.errors.NotFound as exc:
            raise SandboxNotFound(f"No sandbox container named {sandbox_id} exists.") from exc
        labels = info.get("Config", {}).get("Labels") or {}
        if labels.get(LABEL_APP) != APP_NAME or labels.get(LABEL_OWNER) != self.owner:
            raise SandboxNotFound(
                f"Container {sandbox_id} is not a sandbox of owner {self.owner}; not attaching."
            )
        try:
            limits = ResourceLimits(**json.loads(labels.get(LABEL_LIMITS, "{}")))
        except (TypeError, ValueError) as exc:
            raise SandboxError(f"Sandbox {sandbox_id} has unreadable limit labels") from exc
        volume = labels.get(LABEL_VOLUME, "")
        network = labels.get(LABEL_NETWORK)
        mode = "isolated" if network and network.startswith("sbxi-") else "none"
        if network and not network.startswith("sbxi-"):
            mode = "bridge"
        group = labels.get(LABEL_GROUP)
        user_labels = {k: v for k, v in labels.items() if not k.startswith(LABEL_PREFIX)}
        config = config.replace(
            sandbox_id=sandbox_id,
            limits=limits,
            network_mode=mode,
            network_group=group,
            labels=user_labels,
            workdir=info.get("Config", {}).get("WorkingDir") or config.workdir,
            image=info.get("Config", {}).get("Image") or config.image,
        )
        disk_path = self._disk_path_for(volume)
        sandbox = DockerSandbox(
            backend=self,
            sandbox_id=sandbox_id,
            config=config,
            limits=limits,
            container_id=info["Id"],
            volume=volume,
            network=network if mode == "isolated" else None,
            disk_path=disk_path if disk_path and os.path.exists(disk_path) else None,
            deadline=float(labels.get(LABEL_DEADLINE, "0") or 0),
        )
        state = info.get("State", {})
        if state.get("Running"):
            sandbox._state = SandboxState.RUNNING
            sandbox.started_at = _docker_time(state.get("StartedAt")) or None
        elif state.get("StartedAt", "").startswith("0001"):
            sandbox._state = SandboxState.CREATED
        else:
            sandbox._state = SandboxState.STOPPED
        return sandbox

    def list_containers(self, *, owner: str | None = None) -> list[dict[str, Any]]:
        filters = [f"{LABEL_APP}={APP_NAME}", f"{LABEL_OWNER}={owner or self.owner}"]
        with engine_errors("list sandboxes"):
            return self.api().containers(all=True, filters={"label": filters})


def _docker_time(value: str | None) -> float:
    """Parse Docker's RFC 3339 timestamps (nanoseconds, Z or offset) to epoch seconds."""
    if not value:
        return 0.0
    from datetime import datetime

    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    main, dot, rest = text.partition(".")
    if dot:
        digits = "".join(ch for ch in rest if ch.isdigit())
        tz = rest[len(digits) :]
        text = f"{main}.{digits[:6]}{tz}"
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


__all__ = ["DockerProvider", "DockerSandbox", "build_argv", "engine_errors"]
