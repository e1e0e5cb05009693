"""Pieces every provider shares: ownership labels, argv checks, the in-sandbox process killer.

Kept free of any SDK import, so each provider module imports only its own SDK.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import (
    FileTooLarge,
    InvalidSandboxConfig,
    PathOutsideWorkspace,
    SandboxError,
    SandboxFileError,
    SandboxFileNotFound,
)

# Ownership labels (Docker labels, E2B metadata): app, sandbox id, owner, deadline, ...
LABEL_PREFIX = "org.sandboxweb."
LABEL_APP = LABEL_PREFIX + "app"
LABEL_ID = LABEL_PREFIX + "sandbox-id"
LABEL_OWNER = LABEL_PREFIX + "owner"
LABEL_DEADLINE = LABEL_PREFIX + "deadline"
LABEL_PROVIDER = LABEL_PREFIX + "provider"
LABEL_LIMITS = LABEL_PREFIX + "limits"
APP_NAME = "sandboxweb"

# Every command runs with a random value in this variable, so the processes it started can be
# found (and killed) later even if they left its process group or session.
EXEC_TOKEN_VAR = "SANDBOX_EXEC_ID"  # noqa: S105 - a variable name
TIMEOUT_EXIT_CODE = 124

# Kills every process whose environment holds "$1" exactly ("exact") or a variable starting
# with it ("prefix"), stopping them first so a forking loop cannot outrun it. Runs inside the
# sandbox as the sandbox user; the host never touches sandbox processes this way.
KILL_SCRIPT = r"""
tok="$1"; mode="$2"; self=$$
n=0
while [ "$n" -lt 50 ]; do
  n=$((n+1)); found=""
  for e in /proc/[0-9]*/environ; do
    p=${e#/proc/}; p=${p%/environ}
    [ "$p" = "$self" ] && continue
    if [ "$mode" = prefix ]; then
      tr '\000' '\n' < "$e" 2>/dev/null | grep -q "^$tok" && found="$found $p"
    elif tr '\000' '\n' < "$e" 2>/dev/null | grep -qxF -- "$tok"; then found="$found $p"; fi
  done
  [ -z "$found" ] && exit 0
  kill -STOP $found 2>/dev/null; kill -KILL $found 2>/dev/null
done
exit 1
"""


def first_line(exc: BaseException) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return (str(text).strip().splitlines() or [type(exc).__name__])[0][:300]


def build_argv(command: str | Sequence[str], args: Sequence[str] | None) -> list[str]:
    if isinstance(args, str | bytes):
        raise TypeError("args must be a list of strings, not a single string")
    argv = [command] if isinstance(command, str) else list(command)
    argv += list(args or [])
    if not argv or not argv[0]:
        raise InvalidSandboxConfig("command must not be empty")
    for item in argv:
        if not isinstance(item, str):
            raise TypeError(f"command arguments must be strings (got {type(item).__name__})")
        if "\x00" in item:
            raise InvalidSandboxConfig("command arguments must not contain NUL bytes")
    return argv


def check_env(env: dict[str, str]) -> dict[str, str]:
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\x00" in key:
            raise InvalidSandboxConfig(f"Invalid environment variable name {key!r}")
        if not isinstance(value, str) or "\x00" in value:
            raise InvalidSandboxConfig(f"Environment variable {key} must be a string")
    return env


__all__ = [
    "APP_NAME",
    "EXEC_TOKEN_VAR",
    "KILL_SCRIPT",
    "LABEL_APP",
    "LABEL_DEADLINE",
    "LABEL_ID",
    "LABEL_LIMITS",
    "LABEL_OWNER",
    "LABEL_PREFIX",
    "LABEL_PROVIDER",
    "TIMEOUT_EXIT_CODE",
    "build_argv",
    "check_env",
    "first_line",
]


def file_script_error(
    code: int, path: str, detail: str, *, sandbox_id: str, workspace: str, limit: int = 0
) -> SandboxError | None:
    """The typed error for an exit code of the in-sandbox file scripts (71-77, the same
    scripts on every provider); None for any other code, which the provider explains."""
    if code == 71:
        return PathOutsideWorkspace(
            f"{path} {detail or 'leaves the workspace'} (through a symlink), outside "
            f"{workspace}; the sandbox file API only follows links inside it."
        )
    if code == 72:
        return SandboxFileNotFound(f"{path} does not exist in sandbox {sandbox_id}.")
    if code == 73:
        return SandboxFileError(f"{path} is a directory; pass a file path.")
    if code == 74:
        return SandboxFileError(f"{path} is not a regular file (device, FIFO or socket).")
    if code == 75:
        return FileTooLarge(
            f"{path} is {detail} bytes, more than the {limit} bytes allowed for read_file; "
            "use read_file_to() to stream it."
        )
    if code == 76:
        return SandboxFileError(f"A parent of {path} exists and is not a directory.")
    if code == 77:
        return SandboxFileError(f"{path} is a non-empty directory; pass recursive=True.")
    return None
