"""Value types of the sandbox layer: limits, configuration, results.

Everything here is plain data (no engine access) so callers can build, compare and log it freely.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Literal

from .errors import InvalidSandboxConfig

DEFAULT_WORKSPACE = "/workspace"
DEFAULT_DOCKER_IMAGE = "sandboxweb/sandbox:latest"
NetworkMode = Literal["none", "isolated", "bridge"]
NETWORK_MODES: tuple[str, ...] = ("none", "isolated", "bridge")
# Docker's own rule for container names, minus the leading slash; also keeps ids label-safe.
_ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,99}$")


class SandboxState(StrEnum):
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    DESTROYED = "destroyed"
    ERROR = "error"


class EndReason(StrEnum):
    """Why a sandbox (or one command in it) ended; the strings are shown to users and stored."""

    TIMEOUT = "timeout"
    OOM = "oom"
    DISK_LIMIT = "disk_limit"
    OUTPUT_LIMIT = "output_limit"
    CANCELLED = "cancelled"
    CRASHED = "crashed"
    DESTROYED = "destroyed"
    STOPPED = "stopped"


class _Unset:
    _instance: ClassVar[_Unset | None] = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Any = _Unset()

_LIMIT_DEFAULTS: dict[str, Any] = {
    "memory_mb": 512,
    "cpu_cores": 1.0,
    "disk_mb": 1024,
    "network_mbps": None,
    "timeout_seconds": 300,
    "max_processes": 256,
}


@dataclass(frozen=True, init=False)
class ResourceLimits:
    """Kernel-enforced limits of one sandbox.

    Every field has a default (the values in the signature), but the constructor also records
    which fields the caller *set*. ``merged_with(base)`` takes the set fields from ``self`` and the
    rest from ``base``, so ``ResourceLimits(memory_mb=256)`` given to one sandbox overrides only
    memory and keeps the manager's CPU, disk, ... (never all-or-nothing). ``None`` is a real value
    ("no limit") where a field allows it (``network_mbps``, ``disk_mb``), not "unset".
    """

    memory_mb: int
    cpu_cores: float
    disk_mb: int | None
    network_mbps: float | None
    timeout_seconds: float
    max_processes: int
    explicit: frozenset[str] = field(compare=False, repr=False)

    def __init__(
        self,
        memory_mb: int = UNSET,
        cpu_cores: float = UNSET,
        disk_mb: int | None = UNSET,
        network_mbps: float | None = UNSET,
        timeout_seconds: float = UNSET,
        max_processes: int = UNSET,
    ) -> None:
        given = {
            "memory_mb": memory_mb,
            "cpu_cores": cpu_cores,
            "disk_mb": disk_mb,
            "network_mbps": network_mbps,
            "timeout_seconds": timeout_seconds,
            "max_processes": max_processes,
        }
        explicit = frozenset(name for name, value in given.items() if value is not UNSET)
        for name, value in given.items():
            object.__setattr__(self, name, _LIMIT_DEFAULTS[name] if value is UNSET else value)
        object.__setattr__(self, "explicit", explicit)
        self._validate()

    def _validate(self) -> None:
        def bad(message: str) -> InvalidSandboxConfig:
            return InvalidSandboxConfig(f"Invalid resource limit: {message}")

        if not isinstance(self.memory_mb, int) or self.memory_mb < 16:
            raise bad(f"memory_mb must be an integer >= 16 (got {self.memory_mb!r})")
        if not isinstance(self.cpu_cores, int | float) or not 0.01 <= self.cpu_cores <= 1024:
            raise bad(f"cpu_cores must be between 0.01 and 1024 (got {self.cpu_cores!r})")
        if self.disk_mb is not None and (not isinstance(self.disk_mb, int) or self.disk_mb < 8):
            raise bad(f"disk_mb must be an integer >= 8 or None (got {self.disk_mb!r})")
        if self.network_mbps is not None and (
            not isinstance(self.network_mbps, int | float) or self.network_mbps <= 0
        ):
            raise bad(f"network_mbps must be > 0 or None (got {self.network_mbps!r})")
        if not isinstance(self.timeout_seconds, int | float) or self.timeout_seconds <= 0:
            raise bad(f"timeout_seconds must be > 0 (got {self.timeout_seconds!r})")
        if not isinstance(self.max_processes, int) or self.max_processes < 8:
            raise bad(f"max_processes must be an integer >= 8 (got {self.max_processes!r})")

    def merged_with(self, base: ResourceLimits | None) -> ResourceLimits:
        """Fields set on ``self`` win; every other field comes from ``base``."""
        if base is None:
            return self
        values = {
            name: getattr(self, name) if name in self.explicit else getattr(base, name)
            for name in _LIMIT_DEFAULTS
            if name in self.explicit or name in base.explicit
        }
        return ResourceLimits(**values)

    def replace(self, **changes: Any) -> ResourceLimits:
        """A copy with ``changes`` applied (they count as set); other fields keep their status."""
        values = {name: getattr(self, name) for name in self.explicit}
        values.update(changes)
        return ResourceLimits(**values)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _LIMIT_DEFAULTS}

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * 1024 * 1024


@dataclass(frozen=True)
class DockerOptions:
    """Docker-specific knobs. The hardening itself is not configurable here on purpose."""

    base_url: str | None = None  # None: DOCKER_HOST or the local socket
    api_timeout_seconds: float = 120.0
    user: str = "1000:1000"
    tmp_size_mb: int = 64
    # Workspace backend that enforces disk_mb: "loop" (ext4 image on a loop device, needs root
    # and a local engine), "tmpfs" (RAM-backed volume), or "auto" (loop when possible).
    disk_backend: Literal["auto", "loop", "tmpfs"] = "auto"
    disk_dir: str = "/var/lib/sandboxweb/disks"
    nofile: int = 1024
    runtime: str | None = None  # e.g. "runsc" where gVisor is installed
    egress_network: str = "sbx-egress"
    # Destinations a bridged sandbox may never reach: cloud metadata, RFC 1918, CGNAT.
    blocked_cidrs: tuple[str, ...] = (
        "169.254.0.0/16",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
    )


@dataclass(frozen=True)
class E2BOptions:
    """E2B-specific knobs (see docs/sandboxes.md, "E2B").

    ``api_key`` None means ``$E2B_API_KEY``. ``timeout_seconds`` can only shorten the sandbox's
    life (``limits.timeout_seconds`` stays the cap). ``metadata`` is published to anyone who can
    list the team's sandboxes: never put secrets there. ``api_url``/``sandbox_url`` point the
    SDK at another control plane / envd endpoint (the loopback test server); None means the
    SDK's own resolution (``E2B_API_URL``/``E2B_SANDBOX_URL``, then ``domain``).
    """

    api_key: str | None = field(default=None, repr=False)
    template: str = "base"
    domain: str | None = None
    timeout_seconds: int | None = None
    allow_internet_access: bool | None = None  # None: derived from network_mode
    metadata: Mapping[str, str] = field(default_factory=dict)
    api_url: str | None = None
    sandbox_url: str | None = None
    request_timeout_seconds: float | None = None  # None: the SDK's 60 s
    retries: int | None = None  # control-plane retries on 429/5xx; None: the SDK's 3


@dataclass(frozen=True)
class SandboxConfig:
    """What to create. ``provider=None`` means the manager's provider.

    ``env`` is applied to every command (and never stored in container metadata, so secrets do
    not show up in ``docker inspect``). ``sandbox_id`` makes the id deterministic: creating a
    second sandbox with the same id raises ``SandboxExists`` instead of replacing the first.
    ``network_group`` groups ``isolated`` sandboxes that may talk to each other (default: alone).
    """

    provider: str | None = None
    image: str | None = None
    limits: ResourceLimits = field(default_factory=ResourceLimits)
    network_mode: NetworkMode = "none"
    network_group: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str = DEFAULT_WORKSPACE
    labels: Mapping[str, str] = field(default_factory=dict)
    sandbox_id: str | None = None
    max_output_bytes: int = 1024 * 1024
    output_limit_bytes: int = 64 * 1024 * 1024
    docker: DockerOptions = field(default_factory=DockerOptions)
    e2b: E2BOptions = field(default_factory=E2BOptions)

    def __post_init__(self) -> None:
        if self.network_mode not in NETWORK_MODES:
            raise InvalidSandboxConfig(
                f"network_mode must be one of {', '.join(NETWORK_MODES)} "
                f"(got {self.network_mode!r})"
            )
        if self.network_group is not None and not _ID_RE.match(self.network_group):
            raise InvalidSandboxConfig(
                f"network_group {self.network_group!r} must match {_ID_RE.pattern}"
            )
        if self.sandbox_id is not None:
            validate_sandbox_id(self.sandbox_id)
        if not self.workdir.startswith("/") or self.workdir.rstrip("/") in ("", "/"):
            raise InvalidSandboxConfig(
                f"workdir must be an absolute path below / (got {self.workdir!r})"
            )
        for key, value in self.env.items():
            if not isinstance(key, str) or not key or "=" in key or "\x00" in key:
                raise InvalidSandboxConfig(f"Invalid environment variable name {key!r}")
            if not isinstance(value, str) or "\x00" in value:
                raise InvalidSandboxConfig(f"Environment variable {key} must be a string")
        if self.max_output_bytes < 1024 or self.output_limit_bytes < self.max_output_bytes:
            raise InvalidSandboxConfig(
                "max_output_bytes must be >= 1024 and output_limit_bytes >= max_output_bytes"
            )

    def replace(self, **changes: Any) -> SandboxConfig:
        return dataclasses.replace(self, **changes)


def validate_sandbox_id(sandbox_id: str) -> str:
    if not isinstance(sandbox_id, str) or not _ID_RE.match(sandbox_id):
        raise InvalidSandboxConfig(
            f"sandbox id {sandbox_id!r} must be 1-100 characters of letters, digits, '_', '.', "
            "'-', starting with a letter or digit"
        )
    return sandbox_id


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one command.

    ``stdout``/``stderr`` are decoded UTF-8 (invalid bytes become U+FFFD) and hold at most the
    last ``max_output_bytes`` of each stream (``truncated`` says some were dropped); the raw
    bytes are in ``stdout_bytes``/``stderr_bytes``. A timed-out command has ``exit_code`` 124.
    ``end_reason`` is set when the command did not end by itself: ``timeout``, ``oom`` (a process
    was killed by the kernel for memory) or ``output_limit``.
    """

    exit_code: int
    stdout: str
    stderr: str
    duration_ms: float
    timed_out: bool = False
    truncated: bool = False
    oom_killed: bool = False
    end_reason: str | None = None
    stdout_bytes: bytes = field(default=b"", repr=False)
    stderr_bytes: bytes = field(default=b"", repr=False)
    output_bytes_total: int = 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


@dataclass(frozen=True)
class FileInfo:
    path: str  # absolute path inside the sandbox, e.g. /workspace/src/app.py
    size: int
    is_dir: bool
    mtime: float
    is_symlink: bool = False

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class SandboxStats:
    memory_usage_mb: float
    memory_limit_mb: float
    cpu_percent: float  # percent of one core, like `docker stats` (2 busy cores = 200)
    disk_usage_mb: float
    network_rx_mb: float
    network_tx_mb: float
    pids: int
    disk_limit_mb: float | None = None
    timestamp: float = 0.0


@dataclass(frozen=True)
class HealthStatus:
    healthy: bool
    message: str | None = None
