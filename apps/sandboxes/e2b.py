"""E2B provider: the same ``Sandbox`` contract as Docker, on the official ``e2b`` SDK (2.x).

Only this module imports ``e2b``. Mapping (docs/sandboxes.md, "E2B"):

* lifecycle: ``start()`` = ``Sandbox.create`` (template, timeout, envs, metadata) - the E2B
  timeout *is* the sandbox deadline, so E2B ends the sandbox even if every worker died;
  ``stop()``/``start()`` = pause / ``connect`` (resume) + ``set_timeout``; ``destroy()`` = ``kill``
  (idempotent); ``attach`` = metadata lookup + ``connect``; reaping = ``Sandbox.list`` filtered by
  our metadata, then ``kill``.
* ``execute`` = ``commands.run`` with streaming callbacks. The argv becomes one shell string with
  ``shlex.join`` (envd runs ``/bin/bash -l -c <string>``), so no argument is ever parsed as shell
  text. Each command carries a random ``SANDBOX_EXEC_ID``; on a timeout the provider kills the
  command's process (``commands.kill``) and then every process holding that value, inside the
  sandbox, because envd only signals the top process.
* files: a small fixed ``sh`` script resolves the path *inside* the sandbox (symlinks included)
  and checks it stays in the workspace - the same rule and the same errors as Docker - and then
  ``files.read/write/list/remove`` act on the resolved path.
* ``get_stats`` = the metrics endpoint; ``health_check`` = envd's ``/health``.
* Limits E2B cannot enforce are refused with ``UnsupportedLimit`` (see ``_check_limits``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import secrets
import shlex
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import httpx
from e2b import Sandbox as SDKSandbox
from e2b import SandboxQuery
from e2b.exceptions import (
    AuthenticationException,
    FileNotFoundException,
    InvalidArgumentException,
    NotEnoughSpaceException,
    NotFoundException,
    RateLimitException,
    SandboxException,
    SandboxNotFoundException,
    SandboxNotRunningException,
    SandboxUnreachableException,
    ServiceBusyException,
    TemplateException,
    TimeoutException,
)
from e2b.sandbox.commands.command_handle import CommandExitException

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
    check_env,
    file_script_error,
    first_line,
)
from .errors import (
    DiskLimitExceeded,
    FileTooLarge,
    ImageNotFound,
    InvalidSandboxConfig,
    NetworkPolicyUnavailable,
    PathOutsideWorkspace,
    SandboxError,
    SandboxExists,
    SandboxFileError,
    SandboxFileNotFound,
    SandboxNotFound,
    SandboxRateLimited,
    SandboxStateError,
    SandboxTimeout,
    SandboxUnavailable,
    UnsupportedLimit,
)
from .paths import workspace_path
from .stream import OutputTail, StopReading, decode_output
from .types import (
    E2BOptions,
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

MAX_E2B_TIMEOUT_SECONDS = 24 * 3600  # E2B's cap (Pro); Hobby accounts stop at 1 h
FILE_OP_TIMEOUT = 600.0
STDIN_CHUNK = 256 * 1024
DEFAULT_MAX_READ_BYTES = 1024 * 1024 * 1024
RECURSIVE_DEPTH = 64
MAX_LIST_ENTRIES = 100_000
KEY_HINT = (
    "set E2B_API_KEY (instance-wide) or E2BOptions(api_key=...) to a key from "
    "https://e2b.dev/dashboard?tab=keys"
)

# Go's os/exec reports a process ended by a signal as exit -1 with "signal: <name>"; Docker
# and shells say 128+N. The names are strsignal()'s, lower-cased.
_SIGNAL_NAMES = {
    (signal.strsignal(sig) or "").lower(): int(sig)
    for sig in signal.Signals
    if signal.strsignal(sig)
}

# -- in-sandbox scripts (fixed text; every input is a positional argument) -------------------
_SETUP_SCRIPT = r"""
ws=$1
echo "$(id -u):$(id -g)"
[ -d "$ws" ] || mkdir -p -- "$ws" 2>/dev/null || exit 3
[ -w "$ws" ] || exit 3
df -Pk -- "$ws" | tail -n 1
"""
_ROOT_SETUP_SCRIPT = r"""mkdir -p -- "$1" && chown -- "$2" "$1" """
# Resolves $2 inside the sandbox and checks it stays in the workspace $1 (exit 71 otherwise),
# then checks what operation $3 needs. Prints the resolved path (NUL-terminated). The exit
# codes are the Docker provider's, so both raise the same errors.
_PREFLIGHT_SCRIPT = r"""
set -u
ws=$1; p=$2; op=$3
r=$(realpath -m -- "$p" && echo x) || { echo "cannot resolve path" >&2; exit 70; }
r=${r%x}; r=${r%?}
case "$r" in "$ws"|"$ws"/*) ;; *) printf 'resolves to %s\n' "$r" >&2; exit 71;; esac
case "$op" in
read)
  [ -e "$r" ] || exit 72
  [ -d "$r" ] && exit 73
  [ -f "$r" ] || exit 74
  s=$(stat -c %s -- "$r") || exit 72
  [ "$s" -gt "$4" ] && { echo "$s" >&2; exit 75; } ;;
write)
  [ "$r" = "$ws" ] && exit 73
  [ -d "$r" ] && exit 73
  d=${r%/*}
  mkdir -p -- "$d" 2>/dev/null || { [ -d "$d" ] || exit 76; } ;;
list)
  [ -e "$r" ] || exit 72
  [ -d "$r" ] || { printf '%s\0' "$r"; exec find "$r" -maxdepth 0 -printf '%y\t%s\t%T@\t%p\0'; } ;;
delete)
  r="$r/$4"
  [ -e "$r" ] || [ -L "$r" ] || exit 72
  if [ -d "$r" ] && [ ! -L "$r" ] && [ "$5" != 1 ]; then
    [ -z "$(ls -A -- "$r")" ] || exit 77
  fi ;;
esac
printf '%s\0' "$r"
"""


def _ceil_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))


class E2BSandbox(Sandbox):
    provider = "e2b"

    def __init__(
        self,
        *,
        backend: E2BProvider,
        sandbox_id: str,
        config: SandboxConfig,
        limits: ResourceLimits,
        deadline: float,
        api: dict[str, Any],
        metadata: dict[str, str],
    ) -> None:
        super().__init__(sandbox_id=sandbox_id, config=config, limits=limits)
        self._backend = backend
        self._api = api
        self.metadata = metadata
        self.deadline = deadline
        self.e2b_id: str | None = None
        self._sdk: SDKSandbox | None = None
        self._cpu_count: int | None = None
        self._memory_mb: int | None = None
        self._disk_mb: float | None = None
        # What the sandbox got that differs from what was asked (a smaller template).
        self.notices: list[str] = []

    # -- errors -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except (SandboxNotRunningException, SandboxNotFoundException) as exc:
            raise self._gone(exc) from exc
        except Exception as exc:
            translated = translate_error(exc, f"{action} (sandbox {self.id})", self._api)
            if translated is None:
                raise
            raise translated from exc

    def _gone(self, exc: BaseException | None = None) -> SandboxError:
        """The E2B sandbox vanished: record why and return the error to raise."""
        with self._lock:
            if self.remaining_seconds() <= 1.0:
                self._mark_ended(EndReason.TIMEOUT, "the sandbox's wall-clock deadline passed")
                return SandboxTimeout(
                    f"Sandbox {self.id} reached its wall-clock limit "
                    f"({self.limits.timeout_seconds:g}s) and E2B ended it; create a new sandbox."
                )
            if self._state is not SandboxState.DESTROYED:
                self._state = SandboxState.ERROR
            if self.end_reason is None:
                self.end_reason = EndReason.CRASHED
                self.end_message = "the E2B sandbox was killed outside sandboxweb"
        detail = f" ({first_line(exc)})" if exc is not None else ""
        return SandboxNotFound(
            f"The E2B sandbox {self.e2b_id} behind sandbox {self.id} no longer exists: it was "
            f"killed outside sandboxweb or E2B ended it{detail}; create a new sandbox."
        )

    def _mark_ended(self, reason: str, message: str) -> None:
        if self.end_reason is None or self.end_reason == EndReason.DESTROYED:
            self.end_reason, self.end_message = reason, message
        if self._state is not SandboxState.DESTROYED:
            self._state = SandboxState.STOPPED

    def _require_sdk(self) -> SDKSandbox:
        self._require_running()
        assert self._sdk is not None  # running implies connected
        return self._sdk

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._state is SandboxState.RUNNING:
                return
            if self._state is SandboxState.DESTROYED:
                raise SandboxStateError(f"Sandbox {self.id} was destroyed; create a new one.")
            if self._state is SandboxState.ERROR and self.e2b_id is not None:
                raise SandboxStateError(
                    f"Sandbox {self.id} is gone ({self.end_reason}: {self.end_message}); "
                    "create a new one."
                )
            if self.remaining_seconds() <= 0:
                self._mark_ended(EndReason.TIMEOUT, "the sandbox's wall-clock deadline passed")
                raise SandboxTimeout(
                    f"Sandbox {self.id} is past its deadline ({self.limits.timeout_seconds}s)."
                )
            previous = self._state
            self._state = SandboxState.STARTING
            try:
                if self.e2b_id is None:
                    self._create()
                else:
                    self._resume()
            except BaseException:
                if self._state is SandboxState.STARTING:
                    self._state = previous
                raise
            self._state = SandboxState.RUNNING
            self.started_at = time.time()

    def _e2b_timeout(self) -> int:
        seconds = self.remaining_seconds()
        if self.config.e2b.timeout_seconds:
            seconds = min(seconds, self.config.e2b.timeout_seconds)
            self.deadline = min(self.deadline, time.time() + self.config.e2b.timeout_seconds)
        return _ceil_seconds(seconds)

    def _create(self) -> None:
        options = self.config.e2b
        if self.config.sandbox_id:
            existing = self._backend.find(self.id, self._api)
            if existing is not None:
                raise SandboxExists(
                    f"An E2B sandbox with id {self.id} already exists ({existing.sandbox_id}); "
                    "it was left untouched (attach to it, or choose another id).",
                    sandbox_id=self.id,
                )
        timeout = self._e2b_timeout()
        self.metadata[LABEL_DEADLINE] = str(int(self.deadline))
        try:
            with self._errors(f"create an E2B sandbox from template {options.template!r}"):
                sdk = SDKSandbox.create(
                    template=options.template,
                    timeout=timeout,
                    metadata=dict(self.metadata),
                    envs=dict(self.config.env) or None,
                    allow_internet_access=allow_internet(self.config),
                    **self._api,
                )
        except SandboxNotFound as exc:  # a 404 on create names the template
            raise ImageNotFound(
                f"E2B has no template {options.template!r} for this API key ({exc}); build it "
                "with the E2B CLI or use E2BOptions(template='base')."
            ) from exc
        self._sdk, self.e2b_id = sdk, sdk.sandbox_id
        try:
            self._check_resources()
            self._setup_workspace()
        except BaseException:
            self._kill_quietly()
            self._state = SandboxState.DESTROYED
            raise

    def _check_resources(self) -> None:
        """Explicit limits must hold on the template E2B gave us; refuse what they cannot."""
        assert self._sdk is not None
        with self._errors("read the sandbox's size"):
            info = self._sdk.get_info()
        self._cpu_count, self._memory_mb = int(info.cpu_count), int(info.memory_mb)
        template = self.config.e2b.template
        limits = self.limits
        problems, notices = [], []
        if "memory_mb" in limits.explicit:
            if self._memory_mb > limits.memory_mb:
                problems.append(
                    f"memory_mb={limits.memory_mb}: template {template!r} has "
                    f"{self._memory_mb} MB, and E2B cannot cap a sandbox below its template"
                )
            elif self._memory_mb < limits.memory_mb:
                notices.append(f"memory is {self._memory_mb} MB (template), below the limit")
        if "cpu_cores" in limits.explicit:
            if self._cpu_count > limits.cpu_cores:
                problems.append(
                    f"cpu_cores={limits.cpu_cores:g}: template {template!r} has "
                    f"{self._cpu_count} vCPU, and E2B cannot cap a sandbox below its template"
                )
            elif self._cpu_count < limits.cpu_cores:
                notices.append(f"{self._cpu_count} vCPU (template), below the limit")
        if problems:
            raise UnsupportedLimit(
                "E2B cannot enforce " + "; ".join(problems) + ". Use a template sized within "
                "the limits (E2B CLI: --cpu-count/--memory-mb) or raise the limits."
            )
        self.notices.extend(notices)

    def _setup_workspace(self) -> None:
        """Create the workspace (as root if the template's user cannot) and check its size."""
        assert self._sdk is not None
        out, code, _ = self._script(_SETUP_SCRIPT, [self.workspace], action="prepare the workspace")
        lines = out.decode("utf-8", "replace").splitlines()
        if code == 3 and lines:
            self._script(
                _ROOT_SETUP_SCRIPT,
                [self.workspace, lines[0].strip()],
                action="create the workspace",
                user="root",
                check=True,
            )
            out, code, _ = self._script(
                _SETUP_SCRIPT, [self.workspace], action="prepare the workspace"
            )
            lines = out.decode("utf-8", "replace").splitlines()
        if code != 0 or len(lines) < 2:
            raise SandboxError(
                f"Sandbox {self.id}: the workspace {self.workspace} cannot be prepared "
                f"(exit {code}); the template must allow creating it."
            )
        try:
            self._disk_mb = int(lines[1].split()[1]) / 1024
        except (IndexError, ValueError):
            self._disk_mb = None
        disk_mb = self.limits.disk_mb
        if self._disk_mb and "disk_mb" in self.limits.explicit:
            if disk_mb is not None and self._disk_mb > disk_mb:
                raise UnsupportedLimit(
                    f"E2B cannot enforce disk_mb={disk_mb}: the workspace's disk in template "
                    f"{self.config.e2b.template!r} holds {self._disk_mb:.0f} MB and E2B has no "
                    "per-directory quota. Use a template with a smaller disk, raise disk_mb, "
                    "or set disk_mb=None."
                )
            if disk_mb is not None and self._disk_mb < disk_mb:
                self.notices.append(f"the workspace disk holds {self._disk_mb:.0f} MB")
        for notice in self.notices:
            log.info("sandbox %s on E2B: %s", self.id, notice)

    def _resume(self) -> None:
        assert self.e2b_id is not None
        timeout = self._e2b_timeout()
        with self._errors("resume the sandbox"):
            # A fresh handle: the envd access token comes with the connect answer.
            self._sdk = SDKSandbox.connect(self.e2b_id, timeout=timeout, **self._api)
            # connect() only ever lengthens a running sandbox's timeout: set it exactly.
            self._sdk.set_timeout(timeout)

    def stop(self) -> None:
        """Pause the E2B sandbox (files and memory are kept); ``start()`` resumes it."""
        with self._lock:
            if self._state in (SandboxState.DESTROYED, SandboxState.STOPPED):
                return
            if self._sdk is None or self._state is not SandboxState.RUNNING:
                self._state = SandboxState.STOPPED
                return
            self._state = SandboxState.STOPPING
            try:
                with self._errors("pause the sandbox"):
                    self._sdk.pause()
            except SandboxError:
                if self._state is SandboxState.STOPPING:
                    self._state = SandboxState.RUNNING
                raise
            self._state = SandboxState.STOPPED

    def destroy(self) -> None:
        with self._lock:
            if self._state is SandboxState.DESTROYED:
                return
            problem = None
            if self.e2b_id is not None:
                try:
                    with self._errors("kill the sandbox"):
                        SDKSandbox.kill(self.e2b_id, **self._api)  # False: already gone
                except SandboxNotFound:
                    pass
                except SandboxError as exc:
                    problem = exc
            self._state = SandboxState.DESTROYED
            if self.end_reason is None:
                self.end_reason = EndReason.DESTROYED
        self._notify_destroyed()
        if problem is not None:
            raise SandboxError(
                f"Sandbox {self.id}: killing E2B sandbox {self.e2b_id} failed ({problem}); "
                "E2B ends it at its timeout, and reap_orphans() retries."
            ) from problem

    def _kill_quietly(self) -> None:
        if self.e2b_id is not None:
            with contextlib.suppress(Exception):
                SDKSandbox.kill(self.e2b_id, **self._api)

    def _end_by_deadline(self) -> None:
        self._mark_ended(EndReason.TIMEOUT, "the sandbox's wall-clock deadline passed")
        self._kill_quietly()

    # -- commands -----------------------------------------------------------------------------
    def _script(
        self,
        script: str,
        args: list[str],
        *,
        action: str,
        user: str | None = None,
        check: bool = False,
        timeout: float = FILE_OP_TIMEOUT,
    ) -> tuple[bytes, int, str]:
        """Run a fixed helper script; returns (stdout, exit code, stderr)."""
        sdk = self._sdk
        assert sdk is not None
        command = shlex.join(["sh", "-c", script, "sh", *args])
        with self._errors(action):
            try:
                result = sdk.commands.run(
                    command,
                    envs={"LC_ALL": "C"},
                    cwd="/",
                    user=user,
                    timeout=min(timeout, max(1.0, self.remaining_seconds())),
                )
                code, out, err = 0, result.stdout, result.stderr
            except CommandExitException as exc:
                code, out, err = exc.exit_code, exc.stdout or "", exc.stderr or ""
            except TimeoutException as exc:
                if isinstance(exc, SandboxNotRunningException | SandboxUnreachableException):
                    raise
                raise SandboxTimeout(
                    f"Could not {action} in sandbox {self.id}: timed out."
                ) from exc
        if check and code != 0:
            raise SandboxError(f"Could not {action} in sandbox {self.id} (exit {code}): {err}")
        return out.encode("utf-8", "surrogateescape"), code, err

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
        call_env = check_env(dict(env or {}))
        cap = max_output_bytes or self.config.max_output_bytes
        hard_limit = max(self.config.output_limit_bytes, cap)
        tails = {"stdout": OutputTail(cap), "stderr": OutputTail(cap)}
        total = 0

        def on_chunk(stream: str, text: str) -> None:
            nonlocal total
            data = text.encode("utf-8", "surrogateescape")
            total += len(data)
            tails[stream].feed(data)
            if on_output is not None:
                on_output(stream, data)
            if total > hard_limit:
                raise StopReading

        data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
        code, status, duration_ms = self._run(
            shlex.join(argv),
            timeout=timeout,
            env=call_env,
            workdir=workdir or self.workspace,
            stdin=data,
            on_chunk=on_chunk,
        )
        end_reason = None
        if status == "timeout":
            end_reason, code = EndReason.TIMEOUT, TIMEOUT_EXIT_CODE
        elif status == "stopped":
            end_reason = EndReason.OUTPUT_LIMIT
        out, err = tails["stdout"], tails["stderr"]
        out_bytes, err_bytes = out.value(), err.value()
        return ExecResult(
            exit_code=code,
            stdout=decode_output(out_bytes, truncated=out.truncated),
            stderr=decode_output(err_bytes, truncated=err.truncated),
            duration_ms=round(duration_ms, 3),
            timed_out=status == "timeout",
            truncated=out.truncated or err.truncated,
            end_reason=end_reason,
            stdout_bytes=out_bytes,
            stderr_bytes=err_bytes,
            output_bytes_total=total,
        )

    def _run(
        self,
        command: str,
        *,
        timeout: float | None,
        env: dict[str, str],
        workdir: str,
        stdin: bytes | IO[bytes] | None,
        on_chunk: Callable[[str, str], None],
    ) -> tuple[int, str, float]:
        """Run one shell string; returns (exit code, eof|timeout|stopped, duration ms)."""
        sdk = self._require_sdk()
        remaining = self.remaining_seconds()
        if remaining <= 0:
            self._end_by_deadline()
            raise SandboxTimeout(
                f"Sandbox {self.id} reached its wall-clock limit "
                f"({self.limits.timeout_seconds:g}s); create a new sandbox to continue."
            )
        limit = remaining if timeout is None else min(float(timeout), remaining)
        bound_by_deadline = limit >= remaining - 0.05
        token = secrets.token_hex(8)
        env[EXEC_TOKEN_VAR] = token
        started = time.monotonic()
        handle = None
        status, code = "eof", -1
        try:
            with self._errors("run a command"):
                try:
                    handle = sdk.commands.run(
                        command,
                        background=True,
                        envs=env,
                        cwd=workdir,
                        stdin=stdin is not None,
                        timeout=limit,
                    )
                    if stdin is not None:
                        self._send_stdin(sdk, handle.pid, stdin)
                    result = handle.wait(
                        on_stdout=lambda text: on_chunk("stdout", text),
                        on_stderr=lambda text: on_chunk("stderr", text),
                    )
                    code = result.exit_code
                except CommandExitException as exc:
                    code = _exit_code(exc.exit_code, exc.error)
                except StopReading:
                    status = "stopped"
                except TimeoutException as exc:
                    if isinstance(exc, SandboxNotRunningException | SandboxUnreachableException):
                        raise
                    status = "timeout"
        except SandboxTimeout:  # E2B ended the sandbox at its deadline (see _gone)
            status = "timeout"
        finally:
            if handle is not None:
                with contextlib.suppress(Exception):
                    handle.disconnect()
        duration_ms = (time.monotonic() - started) * 1000
        if status == "timeout" and (bound_by_deadline or self.end_reason == EndReason.TIMEOUT):
            self._end_by_deadline()
        elif status != "eof" and handle is not None:
            self._kill_command(sdk, handle.pid, token)
        return code, status, duration_ms

    def _send_stdin(self, sdk: SDKSandbox, pid: int, data: bytes | IO[bytes]) -> None:
        try:
            if isinstance(data, bytes | bytearray | memoryview):
                view = memoryview(data).cast("B")
                for offset in range(0, len(view), STDIN_CHUNK):
                    sdk.commands.send_stdin(pid, bytes(view[offset : offset + STDIN_CHUNK]))
            else:
                while chunk := data.read(STDIN_CHUNK):
                    sdk.commands.send_stdin(pid, chunk)
            sdk.commands.close_stdin(pid)
        except (NotFoundException, InvalidArgumentException) as exc:
            # The process ended (or closed stdin) before reading everything; its output
            # still matters, exactly as with Docker.
            log.debug("sandbox %s: stdin not fully delivered: %s", self.id, exc)

    def _kill_command(self, sdk: SDKSandbox, pid: int, token: str) -> None:
        """envd signals only the command's top process: then kill all it started."""
        try:
            with self._errors("kill a command"):
                sdk.commands.kill(pid)
            self._kill_tagged(f"{EXEC_TOKEN_VAR}={token}", "exact")
        except SandboxError as exc:
            log.warning("sandbox %s: killing a stopped command failed: %s", self.id, exc)

    def _kill_tagged(self, marker: str, mode: str) -> None:
        _out, code, _err = self._script(
            KILL_SCRIPT, [marker, mode], action="kill processes", timeout=30
        )
        if code != 0:
            raise SandboxError(f"Could not kill the processes in sandbox {self.id}; destroy it.")

    def kill_all_processes(self) -> int:
        """Kill every process any command started (background ones too); -1: count unknown."""
        self._require_sdk()
        self._kill_tagged(f"{EXEC_TOKEN_VAR}=", "prefix")
        return -1

    # -- files --------------------------------------------------------------------------------
    def _preflight(self, path: str, op: str, *extra: str) -> tuple[str, bytes]:
        """Resolve ``path`` inside the sandbox for ``op``; returns (resolved path, rest)."""
        self._require_sdk()
        target = workspace_path(path, self.workspace)
        if op == "delete":
            if target == self.workspace:
                raise PathOutsideWorkspace(
                    "The workspace itself cannot be deleted; name a file in it."
                )
            parent, _, base = target.rpartition("/")
            args = [self.workspace, parent or "/", op, base, *extra]
        else:
            if op == "write" and target == self.workspace:
                raise SandboxFileError(f"{path} is the workspace directory itself; name a file.")
            args = [self.workspace, target, op, *extra]
        out, code, err = self._script(_PREFLIGHT_SCRIPT, args, action=f"check {path}")
        if code != 0:
            limit = int(extra[0]) if op == "read" and extra else 0
            raise self._file_error(code, path, err, limit=limit)
        resolved, _, rest = out.partition(b"\0")
        return resolved.decode("utf-8", "surrogateescape"), rest

    def _file_error(self, code: int, path: str, stderr: str, *, limit: int = 0) -> SandboxError:
        detail = stderr.strip()
        known = file_script_error(
            code, path, detail, sandbox_id=self.id, workspace=self.workspace, limit=limit
        )
        if known is not None:
            return known
        return SandboxFileError(f"File operation on {path} failed (exit {code}): {detail}")

    @contextlib.contextmanager
    def _file_errors(self, action: str, path: str) -> Iterator[None]:
        try:
            with self._errors(action):
                yield
        except SandboxFileNotFound as exc:
            raise SandboxFileNotFound(
                f"{path} does not exist in sandbox {self.id} (it vanished while in use)."
            ) from exc

    def write_file(self, path: str, content: str | bytes | IO[bytes]) -> None:
        if isinstance(content, str):
            payload: Any = content.encode("utf-8")
        elif isinstance(content, bytes | bytearray | memoryview):
            payload = bytes(content)
        elif hasattr(content, "read"):
            payload = content
        else:
            raise TypeError(f"content must be str, bytes or a binary file, not {type(content)}")
        resolved, _ = self._preflight(path, "write")
        sdk = self._require_sdk()
        with self._file_errors(f"write {path}", path):
            # octet-stream: one raw body (a file object is streamed, never buffered here)
            sdk.files.write(
                resolved, payload, use_octet_stream=True, request_timeout=FILE_OP_TIMEOUT
            )

    def read_file(self, path: str, *, max_bytes: int = DEFAULT_MAX_READ_BYTES) -> bytes:
        chunks: list[bytes] = []
        self._read(path, chunks.append, max_bytes)
        return b"".join(chunks)

    def read_file_to(self, path: str, destination: IO[bytes], *, max_bytes: int = 1 << 62) -> int:
        return self._read(path, destination.write, max_bytes)

    def _read(self, path: str, sink: Callable[[bytes], Any], max_bytes: int) -> int:
        resolved, _ = self._preflight(path, "read", str(max_bytes))
        sdk = self._require_sdk()
        received = 0
        with self._file_errors(f"read {path}", path):
            reader = sdk.files.read(resolved, format="stream")
            with reader:
                for chunk in reader:
                    received += len(chunk)
                    if received > max_bytes:
                        raise FileTooLarge(
                            f"{path} grew beyond {max_bytes} bytes while being read."
                        )
                    sink(chunk)
        return received

    def list_files(self, path: str = ".", recursive: bool = False) -> list[FileInfo]:
        resolved, rest = self._preflight(path, "list")
        if rest:  # a single file: the preflight already described it
            kind, size, mtime, name = rest.rstrip(b"\0").split(b"\t", 3)
            return [
                FileInfo(
                    path=name.decode("utf-8", "surrogateescape"),
                    size=int(size),
                    is_dir=kind == b"d",
                    mtime=float(mtime),
                    is_symlink=kind == b"l",
                )
            ]
        sdk = self._require_sdk()
        with self._file_errors(f"list {path}", path):
            entries = sdk.files.list(resolved, depth=RECURSIVE_DEPTH if recursive else 1)
        if len(entries) > MAX_LIST_ENTRIES:
            raise SandboxFileError(
                f"{path} holds more than {MAX_LIST_ENTRIES} entries; list a subdirectory."
            )
        infos = []
        for entry in entries:
            kind = getattr(entry.type, "value", None)
            infos.append(
                FileInfo(
                    path=entry.path,
                    size=int(entry.size),
                    is_dir=kind == "dir",
                    mtime=entry.modified_time.timestamp(),
                    is_symlink=kind == "symlink",
                )
            )
        return sorted(infos, key=lambda info: info.path)

    def delete_file(self, path: str, *, recursive: bool = False) -> None:
        resolved, _ = self._preflight(path, "delete", "1" if recursive else "0")
        sdk = self._require_sdk()
        with self._file_errors(f"delete {path}", path):
            sdk.files.remove(resolved)

    # -- observation --------------------------------------------------------------------------
    def get_stats(self) -> SandboxStats:
        sdk = self._require_sdk()
        now = time.time()
        with self._errors("read the sandbox's metrics"):
            metrics = sdk.get_metrics(start=datetime.now(UTC) - timedelta(minutes=2))
        if not metrics:  # E2B samples every few seconds; nothing yet right after the start
            return SandboxStats(
                memory_usage_mb=0.0,
                memory_limit_mb=float(self._memory_mb or 0),
                cpu_percent=0.0,
                disk_usage_mb=0.0,
                network_rx_mb=0.0,
                network_tx_mb=0.0,
                pids=0,
                disk_limit_mb=round(self._disk_mb, 2) if self._disk_mb else None,
                timestamp=now,
            )
        latest = max(metrics, key=lambda m: m.timestamp)
        return SandboxStats(
            memory_usage_mb=round(latest.mem_used / 2**20, 2),
            memory_limit_mb=round(latest.mem_total / 2**20, 2),
            # E2B reports percent of all vCPUs; the contract is percent of one core.
            cpu_percent=round(latest.cpu_used_pct * max(1, latest.cpu_count), 2),
            disk_usage_mb=round(latest.disk_used / 2**20, 2),
            network_rx_mb=0.0,  # not reported by E2B
            network_tx_mb=0.0,
            pids=0,  # not reported by E2B
            disk_limit_mb=round(latest.disk_total / 2**20, 2) if latest.disk_total else None,
            timestamp=latest.timestamp.timestamp(),
        )

    def health_check(self) -> HealthStatus:
        if self._state is not SandboxState.RUNNING or self._sdk is None:
            reason = f": {self.end_reason} ({self.end_message})" if self.end_reason else ""
            return HealthStatus(False, f"sandbox is {self._state.value}{reason}")
        try:
            with self._errors("check the sandbox's health"):
                running = self._sdk.is_running(request_timeout=10)
        except SandboxError as exc:
            return HealthStatus(False, str(exc))
        if not running:
            error = self._gone()
            return HealthStatus(False, str(error))
        return HealthStatus(True, "ok")


def _exit_code(code: int, error: str | None) -> int:
    """envd reports a signalled process as -1 plus "signal: killed"; use 128+N like Docker."""
    if code == -1 and error and error.startswith("signal: "):
        number = _SIGNAL_NAMES.get(error[len("signal: ") :].strip().lower())
        if number:
            return 128 + number
    return code


def allow_internet(config: SandboxConfig) -> bool:
    """``none``/``isolated`` → no internet; ``bridge`` → internet. Options may only tighten."""
    wanted = config.e2b.allow_internet_access
    derived = config.network_mode == "bridge"
    if wanted is True and not derived:
        raise InvalidSandboxConfig(
            f"E2BOptions.allow_internet_access=True contradicts network_mode="
            f"{config.network_mode!r}; use network_mode='bridge' for internet access."
        )
    return derived if wanted is None else wanted


def translate_error(exc: BaseException, action: str, api: Mapping[str, Any]) -> SandboxError | None:
    """Our typed error for an SDK/transport error (None: not one we know)."""
    if isinstance(exc, SandboxError | StopReading):
        return None
    message = first_line(exc)
    if isinstance(exc, AuthenticationException):
        return SandboxUnavailable(
            f"E2B refused the credentials while trying to {action} ({message}); {KEY_HINT}."
        )
    if isinstance(exc, RateLimitException):
        return SandboxRateLimited(
            f"E2B rate-limited the request to {action} (HTTP 429) and retrying did not help; "
            "wait and try again, run fewer sandboxes at once, or raise the E2B plan's limits."
        )
    if isinstance(exc, ServiceBusyException):
        return SandboxUnavailable(
            f"E2B is busy (HTTP 503) and could not {action}; try again in a moment."
        )
    if isinstance(exc, FileNotFoundException):
        return SandboxFileNotFound(f"Not found while trying to {action}: {message}")
    if isinstance(exc, SandboxNotFoundException | SandboxNotRunningException):
        return SandboxNotFound(f"The E2B sandbox is gone ({message}); could not {action}.")
    if isinstance(exc, NotEnoughSpaceException):
        return DiskLimitExceeded(
            f"The sandbox's disk is full (could not {action}); delete files or use a template "
            "with a larger disk."
        )
    if isinstance(exc, SandboxUnreachableException):
        return SandboxUnavailable(f"The E2B sandbox could not be reached to {action}: {message}")
    if isinstance(exc, TimeoutException | httpx.TimeoutException | TimeoutError):
        return SandboxUnavailable(
            f"E2B did not answer in time while trying to {action}; try again, or raise "
            "E2BOptions.request_timeout_seconds."
        )
    if isinstance(exc, TemplateException):
        return ImageNotFound(f"The E2B template cannot be used ({message}); rebuild it.")
    if isinstance(exc, InvalidArgumentException):
        return InvalidSandboxConfig(f"E2B refused the arguments to {action}: {message}")
    if isinstance(exc, NotFoundException):
        return SandboxNotFound(f"E2B found nothing to {action}: {message}")
    if isinstance(exc, SandboxException):
        status = getattr(exc, "status_code", None)
        if status == 404:
            return SandboxNotFound(f"E2B answered 404 while trying to {action}: {message}")
        if status in (400, 422):
            return InvalidSandboxConfig(f"E2B refused to {action}: {message}")
        return SandboxError(f"E2B failed to {action}: {message}")
    if isinstance(exc, httpx.TransportError | OSError):
        where = api.get("api_url") or f"api.{api.get('domain') or 'e2b.app'}"
        return SandboxUnavailable(
            f"E2B ({where}) is not reachable while trying to {action} ({message}); check the "
            "network, E2B_API_URL / E2BOptions.api_url, and proxy variables (NO_PROXY)."
        )
    return None


class E2BProvider(SandboxProvider):
    name = "e2b"
    supports_pool = False

    def __init__(self, *, owner: str, options: E2BOptions | None = None) -> None:
        super().__init__(owner=owner)
        self.options = options or E2BOptions()

    # -- connection ---------------------------------------------------------------------------
    def api_params(self, options: E2BOptions | None = None) -> dict[str, Any]:
        """SDK connection keywords: the sandbox's options, then the provider's, then env."""
        options = options or self.options
        base = self.options
        key = options.api_key or base.api_key or os.environ.get("E2B_API_KEY")
        if not key:
            raise SandboxUnavailable(f"No E2B API key is configured: {KEY_HINT}.")
        params: dict[str, Any] = {"api_key": key, "debug": False}
        for name, sdk_name in (
            ("domain", "domain"),
            ("api_url", "api_url"),
            ("sandbox_url", "sandbox_url"),
            ("request_timeout_seconds", "request_timeout"),
            ("retries", "retries"),
        ):
            value = getattr(options, name)
            if value is None:
                value = getattr(base, name)
            if value is not None:
                params[sdk_name] = value
        return params

    # -- create -------------------------------------------------------------------------------
    def create(
        self,
        config: SandboxConfig,
        limits: ResourceLimits,
        *,
        pooled: bool = False,
        lifetime_slack: float = 0.0,
    ) -> E2BSandbox:
        if pooled:
            raise SandboxError("The e2b provider has no warm pool; E2B starts sandboxes itself.")
        self._check_config(config, limits)
        api = self.api_params(config.e2b)
        sandbox_id = config.sandbox_id or f"e2b-{secrets.token_hex(8)}"
        validate_sandbox_id(sandbox_id)
        deadline = time.time() + limits.timeout_seconds
        metadata = self._metadata(sandbox_id, deadline, config, limits)
        return E2BSandbox(
            backend=self,
            sandbox_id=sandbox_id,
            config=config,
            limits=limits,
            deadline=deadline,
            api=api,
            metadata=metadata,
        )

    def _check_config(self, config: SandboxConfig, limits: ResourceLimits) -> None:
        """Refuse, before any API call, what E2B cannot do (never silently weaker)."""
        if config.image is not None:
            raise InvalidSandboxConfig(
                f"image={config.image!r} is a Docker image; E2B sandboxes come from templates: "
                "set E2BOptions(template=...) and leave image unset."
            )
        if "max_processes" in limits.explicit:
            raise UnsupportedLimit(
                f"E2B cannot enforce max_processes={limits.max_processes}: a sandbox has no "
                "process limit E2B applies, and the template's user can sudo past ulimits. "
                "Remove the limit for E2B, or use the Docker provider."
            )
        if limits.network_mbps is not None and config.network_mode != "none":
            raise UnsupportedLimit(
                f"E2B cannot enforce network_mbps={limits.network_mbps:g}: it has no bandwidth "
                "limit. Remove the limit, or use network_mode='none'."
            )
        if limits.timeout_seconds > MAX_E2B_TIMEOUT_SECONDS:
            raise UnsupportedLimit(
                f"E2B sandboxes live at most 24 h (1 h on the Hobby plan); timeout_seconds="
                f"{limits.timeout_seconds:g} is longer. Use a shorter limit."
            )
        if config.network_mode == "isolated" and config.network_group is not None:
            raise NetworkPolicyUnavailable(
                f"E2B sandboxes cannot share a private network (network_group="
                f"{config.network_group!r}); use network_mode='none' or the Docker provider."
            )
        allow_internet(config)

    def _metadata(
        self, sandbox_id: str, deadline: float, config: SandboxConfig, limits: ResourceLimits
    ) -> dict[str, str]:
        """Our ownership labels plus the caller's; published by E2B's list API, so: no secrets."""
        metadata = {**config.labels, **config.e2b.metadata}
        for key in metadata:
            if key.startswith(LABEL_PREFIX):
                raise InvalidSandboxConfig(
                    f"Label {key!r} is reserved: keys starting with {LABEL_PREFIX} belong to "
                    "the sandbox layer."
                )
        secret_values = {value for value in config.env.values() if len(value) >= 4}
        for key, value in metadata.items():
            if not isinstance(value, str):
                raise InvalidSandboxConfig(f"E2B metadata {key!r} must be a string")
            if value in secret_values:
                raise InvalidSandboxConfig(
                    f"E2B metadata {key!r} holds the value of an environment variable; E2B "
                    "shows metadata to anyone listing the team's sandboxes, so it must never "
                    "carry secrets."
                )
        metadata.update(
            {
                LABEL_APP: APP_NAME,
                LABEL_ID: sandbox_id,
                LABEL_OWNER: self.owner,
                LABEL_DEADLINE: str(int(deadline)),
                LABEL_PROVIDER: self.name,
                LABEL_LIMITS: json.dumps(limits.as_dict(), sort_keys=True),
            }
        )
        return metadata

    # -- lookup, attach, reap -----------------------------------------------------------------
    def list_sandboxes(
        self, api: dict[str, Any] | None = None, extra: Mapping[str, str] | None = None
    ) -> list[Any]:
        """This owner's E2B sandboxes (running and paused), as the SDK's ``SandboxInfo``."""
        api = api or self.api_params()
        query = SandboxQuery(
            metadata={LABEL_APP: APP_NAME, LABEL_OWNER: self.owner, **(extra or {})}
        )
        found: list[Any] = []
        with _api_errors("list E2B sandboxes", api):
            paginator = SDKSandbox.list(query=query, limit=100, **api)
            while paginator.has_next:
                found.extend(paginator.next_items())
        return found

    def find(self, sandbox_id: str, api: dict[str, Any] | None = None) -> Any | None:
        matches = self.list_sandboxes(api, {LABEL_ID: sandbox_id})
        return matches[0] if matches else None

    def attach(self, sandbox_id: str, config: SandboxConfig) -> E2BSandbox:
        """Wrap this owner's existing E2B sandbox (e.g. after a duplicate task delivery).
        Limits and deadline come from its metadata; ``config`` supplies the rest."""
        api = self.api_params(config.e2b)
        info = self.find(validate_sandbox_id(sandbox_id), api)
        if info is None:
            raise SandboxNotFound(
                f"No E2B sandbox of owner {self.owner} has id {sandbox_id}; not attaching."
            )
        metadata = dict(info.metadata)
        try:
            limits = ResourceLimits(**json.loads(metadata.get(LABEL_LIMITS, "{}")))
        except (TypeError, ValueError) as exc:
            raise SandboxError(f"Sandbox {sandbox_id} has unreadable limit metadata") from exc
        config = config.replace(sandbox_id=sandbox_id, limits=limits)
        sandbox = E2BSandbox(
            backend=self,
            sandbox_id=sandbox_id,
            config=config,
            limits=limits,
            deadline=float(metadata.get(LABEL_DEADLINE, "0") or 0),
            api=api,
            metadata=metadata,
        )
        sandbox.e2b_id = info.sandbox_id
        sandbox._cpu_count, sandbox._memory_mb = info.cpu_count, info.memory_mb
        if getattr(info.state, "value", info.state) == "paused":
            sandbox._state = SandboxState.STOPPED  # resumed by start(), like a stopped container
            return sandbox
        with sandbox._errors("connect to the sandbox"):
            sandbox._sdk = SDKSandbox.connect(info.sandbox_id, **api)
        sandbox._state = SandboxState.RUNNING
        sandbox.started_at = info.started_at.timestamp()
        return sandbox

    def reap(
        self,
        *,
        now: float,
        is_live: LivenessCheck | None,
        keep_ids: set[str],
        grace_seconds: float = 120.0,
    ) -> list[str]:
        api = self.api_params()
        reaped: list[str] = []
        for info in self.list_sandboxes(api):
            metadata = dict(info.metadata)
            sandbox_id = metadata.get(LABEL_ID, info.sandbox_id)
            if sandbox_id in keep_ids:
                continue
            try:
                deadline = float(metadata.get(LABEL_DEADLINE, "0"))
            except ValueError:
                deadline = 0.0
            expired = deadline <= now
            if not expired and (is_live is None or is_live(metadata)):
                continue
            try:
                with _api_errors(f"kill E2B sandbox {info.sandbox_id}", api):
                    SDKSandbox.kill(info.sandbox_id, **api)
            except SandboxError as exc:
                log.warning("reaping %s (%s) failed: %s", sandbox_id, info.sandbox_id, exc)
                continue
            reaped.append(sandbox_id)
        return reaped


@contextlib.contextmanager
def _api_errors(action: str, api: Mapping[str, Any]) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        translated = translate_error(exc, action, api)
        if translated is None:
            raise
        raise translated from exc


__all__ = ["E2BProvider", "E2BSandbox", "allow_internet", "translate_error"]
