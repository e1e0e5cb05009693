"""The provider-independent sandbox interface and the provider registry.

A provider is one ``SandboxProvider`` subclass plus one ``register_provider`` call; the manager
finds it by name. Registration can name the class lazily (``"package.module:Class"``) so an
optional SDK is only imported when that provider is used.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO

from .errors import SandboxError, SandboxStateError, SandboxTimeout, UnknownProvider
from .types import (
    ExecResult,
    FileInfo,
    HealthStatus,
    ResourceLimits,
    SandboxConfig,
    SandboxState,
    SandboxStats,
)

OutputCallback = Callable[[str, bytes], None]
Command = str | Sequence[str]
LivenessCheck = Callable[[Mapping[str, str]], bool]


class Sandbox(ABC):
    """One isolated environment. Use it as a context manager: leaving the block destroys it.

    ``execute(command, args)`` runs the argv list ``[command, *args]`` directly, never through a
    shell: ``execute("sh", ["-c", "echo hi"])`` when you want a shell, and ``execute("ls -la")``
    looks for a program literally named ``ls -la``. ``command`` may also be a list (the whole
    argv). File paths are relative to the workspace or absolute inside it (``x`` and
    ``/workspace/x`` are the same file); anything resolving outside raises
    ``PathOutsideWorkspace``.
    """

    provider: str = ""

    def __init__(self, *, sandbox_id: str, config: SandboxConfig, limits: ResourceLimits) -> None:
        self._id = sandbox_id
        self.config = config
        self._limits = limits
        self._state = SandboxState.CREATED
        self.end_reason: str | None = None
        self.end_message: str | None = None
        self.created_at = time.time()
        self.started_at: float | None = None
        self.deadline: float = self.created_at + limits.timeout_seconds
        self._lock = threading.RLock()
        self._on_destroyed: list[Callable[[Sandbox], None]] = []

    # -- identity -----------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self._id

    @property
    def state(self) -> SandboxState:
        return self._state

    @property
    def limits(self) -> ResourceLimits:
        return self._limits

    @property
    def workspace(self) -> str:
        return self.config.workdir.rstrip("/")

    def remaining_seconds(self, now: float | None = None) -> float:
        return self.deadline - (time.time() if now is None else now)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.state.value}>"

    # -- lifecycle ----------------------------------------------------------------------------
    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def destroy(self) -> None:
        """Release everything; calling it again is harmless."""

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()

    def _notify_destroyed(self) -> None:
        for callback in list(self._on_destroyed):
            # bookkeeping must not mask the destroy outcome
            with contextlib.suppress(Exception):
                callback(self)

    def _require_running(self) -> None:
        if self._state is not SandboxState.RUNNING:
            if self.end_reason == "timeout":
                raise SandboxTimeout(
                    f"Sandbox {self.id} reached its wall-clock limit "
                    f"({self.limits.timeout_seconds:g}s); create a new sandbox to continue."
                )
            reason = f" ({self.end_reason}: {self.end_message})" if self.end_reason else ""
            raise SandboxStateError(
                f"Sandbox {self.id} is {self._state.value}{reason}; start() it first "
                "(or create a new one if it was destroyed)."
            )

    # -- work ---------------------------------------------------------------------------------
    @abstractmethod
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
    ) -> ExecResult: ...

    @abstractmethod
    def write_file(self, path: str, content: str | bytes | IO[bytes]) -> None: ...

    @abstractmethod
    def read_file(self, path: str, *, max_bytes: int = 1 << 30) -> bytes:
        """The file's bytes; ``FileTooLarge`` above ``max_bytes`` (use ``read_file_to``)."""

    def read_file_to(self, path: str, destination: IO[bytes], *, max_bytes: int = 1 << 62) -> int:
        """Stream a file into ``destination``; returns the byte count. Default: via read_file."""
        data = self.read_file(path, max_bytes=max_bytes)
        destination.write(data)
        return len(data)

    @abstractmethod
    def list_files(self, path: str = ".", recursive: bool = False) -> list[FileInfo]: ...

    @abstractmethod
    def delete_file(self, path: str, *, recursive: bool = False) -> None: ...

    def kill_all_processes(self) -> int:
        """Kill every process commands started (background jobs, fork bombs); keep the sandbox."""
        raise SandboxError(f"{type(self).__name__} cannot kill its processes selectively")

    @abstractmethod
    def get_stats(self) -> SandboxStats: ...

    @abstractmethod
    def health_check(self) -> HealthStatus: ...

    # -- pool support (optional) --------------------------------------------------------------
    def _claim(self, *, sandbox_id: str | None, config: SandboxConfig) -> None:
        """Hand a pre-started (pooled) sandbox to a new user: new id if asked, per-run config."""
        raise SandboxError(f"{type(self).__name__} cannot be pooled")


class SandboxProvider(ABC):
    """Creates sandboxes of one kind and finds the ones it left behind."""

    name: str = ""
    supports_pool: bool = False

    def __init__(self, *, owner: str) -> None:
        self.owner = owner

    @abstractmethod
    def create(
        self,
        config: SandboxConfig,
        limits: ResourceLimits,
        *,
        pooled: bool = False,
        lifetime_slack: float = 0.0,
    ) -> Sandbox:
        """Create (not start) a sandbox; ``limits`` are already merged with the defaults.

        ``pooled`` sandboxes wait in a warm pool first: ``lifetime_slack`` extends their
        recorded deadline by the longest time they may wait there."""

    @abstractmethod
    def reap(
        self,
        *,
        now: float,
        is_live: LivenessCheck | None,
        keep_ids: set[str],
        grace_seconds: float = 120.0,
    ) -> list[str]:
        """Remove this owner's sandboxes past their deadline or judged dead by ``is_live``."""

    def attach(self, sandbox_id: str, config: SandboxConfig) -> Sandbox:
        raise SandboxError(f"The {self.name} provider cannot attach to existing sandboxes")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release client connections."""


_REGISTRY: dict[str, type[SandboxProvider] | str] = {}
_REGISTRY_LOCK = threading.Lock()


def register_provider(name: str, provider: type[SandboxProvider] | str) -> None:
    """Register a provider class, or a lazy ``"module:Class"`` reference, under ``name``."""
    with _REGISTRY_LOCK:
        _REGISTRY[name] = provider


def registered_providers() -> list[str]:
    return sorted(_REGISTRY)


def provider_class(name: str) -> type[SandboxProvider]:
    with _REGISTRY_LOCK:
        entry = _REGISTRY.get(name)
    if entry is None:
        raise UnknownProvider(
            f"Unknown sandbox provider {name!r}; available: {', '.join(registered_providers())}. "
            "A new provider is a SandboxProvider subclass plus register_provider()."
        )
    if isinstance(entry, str):
        module_name, _, class_name = entry.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UnknownProvider(
                f"Sandbox provider {name!r} is registered as {entry} but cannot be imported "
                f"({exc}); it is not available in this installation."
            ) from exc
        entry = getattr(module, class_name)
        with _REGISTRY_LOCK:
            _REGISTRY[name] = entry
    return entry


def iter_chunks(data: bytes, size: int = 256 * 1024) -> Iterator[memoryview]:
    view = memoryview(data)
    for offset in range(0, len(view), size):
        yield view[offset : offset + size]


def coerce_bytes(content: str | bytes | bytearray | memoryview) -> bytes | memoryview:
    if isinstance(content, str):
        return content.encode("utf-8")
    if isinstance(content, bytes | memoryview):
        return content
    if isinstance(content, bytearray):
        return memoryview(content)
    raise TypeError(f"content must be str, bytes or a binary file object, not {type(content)}")


__all__ = [
    "Command",
    "LivenessCheck",
    "OutputCallback",
    "Sandbox",
    "SandboxProvider",
    "provider_class",
    "register_provider",
    "registered_providers",
]
