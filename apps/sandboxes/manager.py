"""SandboxManager: the one owner of sandbox lifecycles in a process, with an optional warm pool.

Inject it (no global singleton). It merges per-sandbox limits over its defaults field by field,
registers what it creates, destroys everything on ``destroy_all``/``close``, and reaps what
crashed processes left behind (``reap_orphans``: by label and deadline, or by a liveness callback
from the caller).

Warm pool: with ``pool_size=N`` the manager keeps N started sandboxes per *shape* (provider,
image, limits, network mode, workdir, labels, provider options) and hands one out on
``create_sandbox`` in milliseconds. A pooled sandbox serves exactly one caller and is destroyed
afterwards - never returned to the pool. Shapes are learned from ``create_sandbox`` calls (the
first call of a new shape is cold) or declared up front with ``prewarm(config)``. Pooled
sandboxes older than ``pool_max_idle_seconds`` are replaced, so a handed-out sandbox always has
its full ``timeout_seconds`` ahead of it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .base import LivenessCheck, Sandbox, SandboxProvider, provider_class
from .errors import SandboxError, SandboxNotFound
from .types import (
    HealthStatus,
    ResourceLimits,
    SandboxConfig,
    SandboxState,
    SandboxStats,
)

log = logging.getLogger(__name__)


def default_owner() -> str:
    """Stable per host, so a restarted worker reaps what its predecessor left."""
    return os.environ.get("SANDBOX_OWNER") or socket.gethostname()


@dataclass(frozen=True)
class SandboxReport:
    id: str
    provider: str
    stats: SandboxStats | None = None
    health: HealthStatus | None = None
    error: str | None = None


@dataclass
class _PoolEntry:
    sandbox: Sandbox
    ready_at: float


@dataclass
class _Shape:
    key: tuple
    config: SandboxConfig
    limits: ResourceLimits
    entries: deque[_PoolEntry] = field(default_factory=deque)
    building: int = 0
    failures: int = 0
    retry_at: float = 0.0


class SandboxManager:
    def __init__(
        self,
        provider: str = "docker",
        limits: ResourceLimits | None = None,
        pool_size: int = 0,
        *,
        owner: str | None = None,
        defaults: SandboxConfig | None = None,
        pool_max_idle_seconds: float = 600.0,
        provider_options: dict[str, Any] | None = None,
    ) -> None:
        if pool_size < 0:
            raise ValueError("pool_size must be >= 0")
        self.default_provider = provider
        self.limits = (limits or ResourceLimits()).merged_with(None)
        self.defaults = defaults
        self.owner = owner or default_owner()
        self.pool_size = pool_size
        self.pool_max_idle_seconds = pool_max_idle_seconds
        self._provider_options = provider_options or {}
        self._providers: dict[str, SandboxProvider] = {}
        self._sandboxes: dict[str, Sandbox] = {}
        self._lock = threading.RLock()
        self._shapes: dict[tuple, _Shape] = {}
        self._pool_wakeup = threading.Condition(self._lock)
        self._pool_thread: threading.Thread | None = None
        self._closed = False

    # -- providers ----------------------------------------------------------------------------
    def provider(self, name: str | None = None) -> SandboxProvider:
        name = name or self.default_provider
        with self._lock:
            existing = self._providers.get(name)
            if existing is None:
                cls = provider_class(name)
                existing = cls(owner=self.owner, **self._provider_options.get(name, {}))
                self._providers[name] = existing
            return existing

    def effective(self, config: SandboxConfig | None) -> tuple[SandboxConfig, ResourceLimits]:
        config = config or self.defaults or SandboxConfig()
        if config.provider is None:
            config = config.replace(provider=self.default_provider)
        return config, config.limits.merged_with(self.limits)

    # -- create / lookup ----------------------------------------------------------------------
    def create_sandbox(self, config: SandboxConfig | None = None, *, start: bool = True) -> Sandbox:
        """Create a sandbox (started unless ``start=False``) and register it.

        With a warm pool and a started request, a ready sandbox of the same shape is handed
        out immediately (renamed to ``config.sandbox_id`` if one is given).
        """
        config, limits = self.effective(config)
        provider = self.provider(config.provider)
        if start and self.pool_size > 0 and provider.supports_pool and not self._closed:
            sandbox = self._acquire_pooled(config, limits)
            if sandbox is not None:
                return sandbox
        sandbox = provider.create(config, limits)
        self._register(sandbox)
        if start:
            try:
                sandbox.start()
            except BaseException:
                self._destroy_quietly(sandbox)
                raise
        return sandbox

    def attach_sandbox(self, sandbox_id: str, config: SandboxConfig | None = None) -> Sandbox:
        """Take over an existing sandbox of this owner (e.g. after a duplicate task delivery)."""
        config, _ = self.effective(config)
        sandbox = self.provider(config.provider).attach(sandbox_id, config)
        self._register(sandbox)
        return sandbox

    def _register(self, sandbox: Sandbox) -> None:
        with self._lock:
            self._sandboxes[sandbox.id] = sandbox
        sandbox._on_destroyed.append(self._forget)

    def _forget(self, sandbox: Sandbox) -> None:
        with self._lock:
            if self._sandboxes.get(sandbox.id) is sandbox:
                del self._sandboxes[sandbox.id]

    def get_sandbox(self, sandbox_id: str) -> Sandbox | None:
        with self._lock:
            return self._sandboxes.get(sandbox_id)

    def require_sandbox(self, sandbox_id: str) -> Sandbox:
        sandbox = self.get_sandbox(sandbox_id)
        if sandbox is None:
            raise SandboxNotFound(f"No sandbox {sandbox_id} is managed here.")
        return sandbox

    def list_sandboxes(self) -> list[Sandbox]:
        with self._lock:
            return list(self._sandboxes.values())

    # -- destroy ------------------------------------------------------------------------------
    def destroy_sandbox(self, sandbox_id: str) -> bool:
        """Destroy one sandbox; False if it is not managed here. Errors propagate, but the
        sandbox is unregistered either way (reap_orphans retries leftovers)."""
        sandbox = self.get_sandbox(sandbox_id)
        if sandbox is None:
            return False
        try:
            sandbox.destroy()
        finally:
            self._forget(sandbox)
        return True

    def destroy_all(self) -> list[str]:
        """Destroy every sandbox of this manager, pooled ones included; returns the errors."""
        with self._lock:
            targets = list(self._sandboxes.values())
            for shape in self._shapes.values():
                targets.extend(entry.sandbox for entry in shape.entries)
                shape.entries.clear()
            self._shapes.clear()
        errors: list[str] = []
        if not targets:
            return errors
        with ThreadPoolExecutor(max_workers=min(4, len(targets))) as pool:
            for sandbox, error in zip(
                targets, pool.map(self._destroy_quietly, targets), strict=True
            ):
                if error:
                    errors.append(f"{sandbox.id}: {error}")
                    log.warning("destroying sandbox %s failed: %s", sandbox.id, error)
        return errors

    def _destroy_quietly(self, sandbox: Sandbox) -> str | None:
        try:
            sandbox.destroy()
        except Exception as exc:
            return str(exc)
        finally:
            self._forget(sandbox)
        return None

    def close(self) -> None:
        """Stop the pool, destroy everything, release engine connections."""
        with self._lock:
            self._closed = True
            self._pool_wakeup.notify_all()
        thread = self._pool_thread
        if thread is not None:
            thread.join(timeout=60)
        self.destroy_all()
        for provider in list(self._providers.values()):
            provider.close()

    def __enter__(self) -> SandboxManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def reap_orphans(
        self,
        now: float | None = None,
        *,
        is_live: LivenessCheck | None = None,
        grace_seconds: float = 120.0,
        providers: Iterable[str] | None = None,
    ) -> list[str]:
        """Remove this owner's sandboxes that are past their deadline, or that ``is_live``
        (called with the container's labels, ``org.sandboxweb.sandbox-id`` = current id) says
        are dead; then volumes, networks and disk images no sandbox uses any more (older than
        ``grace_seconds``, so one being created right now is safe). Sandboxes registered here
        and still within their deadline are kept. Returns the reaped sandbox ids."""
        now = time.time() if now is None else now
        with self._lock:
            keep = {
                s.id
                for s in self._sandboxes.values()
                if s.deadline > now and s.state is not SandboxState.DESTROYED
            }
            for shape in self._shapes.values():
                keep.update(e.sandbox.id for e in shape.entries if e.sandbox.deadline > now)
        reaped: list[str] = []
        for name in providers or [self.default_provider]:
            provider = self.provider(name)
            reaped += provider.reap(
                now=now, is_live=is_live, keep_ids=keep, grace_seconds=grace_seconds
            )
        with self._lock:
            for sandbox_id in reaped:
                sandbox = self._sandboxes.pop(sandbox_id, None)
                if sandbox is not None:
                    sandbox._state = SandboxState.DESTROYED
                    sandbox.end_reason = sandbox.end_reason or "timeout"
        return reaped

    # -- observation --------------------------------------------------------------------------
    def get_all_stats(self) -> list[SandboxReport]:
        reports = []
        for sandbox in self.list_sandboxes():
            try:
                reports.append(
                    SandboxReport(sandbox.id, sandbox.provider, stats=sandbox.get_stats())
                )
            except SandboxError as exc:
                reports.append(SandboxReport(sandbox.id, sandbox.provider, error=str(exc)))
        return reports

    def health_check_all(self) -> list[SandboxReport]:
        return [
            SandboxReport(sandbox.id, sandbox.provider, health=sandbox.health_check())
            for sandbox in self.list_sandboxes()
        ]

    # -- warm pool ----------------------------------------------------------------------------
    @staticmethod
    def _shape_key(config: SandboxConfig, limits: ResourceLimits) -> tuple:
        return (
            config.provider,
            config.image,
            tuple(sorted(limits.as_dict().items())),
            config.network_mode,
            config.network_group,
            config.workdir,
            tuple(sorted(config.labels.items())),
            config.docker,
            config.e2b.template,
        )

    def prewarm(
        self, config: SandboxConfig | None = None, *, wait: bool = True, timeout: float = 120
    ) -> int:
        """Declare a pool shape and (optionally) wait until its pool is full; returns its size."""
        config, limits = self.effective(config)
        if self.pool_size <= 0:
            return 0
        shape = self._shape_for(config, limits)
        deadline = time.monotonic() + timeout
        with self._lock:
            self._ensure_pool_thread()
            self._pool_wakeup.notify_all()
            while wait and len(shape.entries) < self.pool_size and time.monotonic() < deadline:
                if shape.failures >= 3:
                    raise SandboxError(
                        "The warm pool cannot create sandboxes of this shape; see logs."
                    )
                self._pool_wakeup.wait(timeout=0.1)
            return len(shape.entries)

    def pool_status(self) -> dict[str, int]:
        with self._lock:
            return {
                str(shape.config.image or "default") + f"#{i}": len(shape.entries)
                for i, shape in enumerate(self._shapes.values())
            }

    def _shape_for(self, config: SandboxConfig, limits: ResourceLimits) -> _Shape:
        pool_config = config.replace(sandbox_id=None, env={})
        key = self._shape_key(pool_config, limits)
        with self._lock:
            shape = self._shapes.get(key)
            if shape is None:
                shape = _Shape(key=key, config=pool_config, limits=limits)
                self._shapes[key] = shape
            return shape

    def _acquire_pooled(self, config: SandboxConfig, limits: ResourceLimits) -> Sandbox | None:
        if config.network_mode == "isolated" and config.network_group is None:
            return None  # a private group is named after the sandbox: nothing to pre-build
        shape = self._shape_for(config, limits)
        now = time.time()
        with self._lock:
            self._ensure_pool_thread()
            entry = None
            while shape.entries:
                candidate = shape.entries.popleft()
                if now - candidate.ready_at < self.pool_max_idle_seconds:
                    entry = candidate
                    break
                threading.Thread(
                    target=self._destroy_quietly, args=(candidate.sandbox,), daemon=True
                ).start()
            self._pool_wakeup.notify_all()
        if entry is None:
            return None
        sandbox = entry.sandbox
        try:
            sandbox._claim(sandbox_id=config.sandbox_id, config=config)
        except BaseException:
            threading.Thread(target=self._destroy_quietly, args=(sandbox,), daemon=True).start()
            raise
        # Its own clock starts now; the container's label deadline includes the idle slack.
        sandbox.deadline = min(sandbox.deadline, time.time() + limits.timeout_seconds)
        self._register(sandbox)
        return sandbox

    def _ensure_pool_thread(self) -> None:
        if self._pool_thread is None or not self._pool_thread.is_alive():
            self._pool_thread = threading.Thread(
                target=self._pool_loop, name="sandbox-pool", daemon=True
            )
            self._pool_thread.start()

    def _pool_loop(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                work = None
                now = time.monotonic()
                for shape in self._shapes.values():
                    if (
                        len(shape.entries) + shape.building < self.pool_size
                        and now >= shape.retry_at
                    ):
                        shape.building += 1
                        work = shape
                        break
                if work is None:
                    self._pool_wakeup.wait(timeout=5)
                    continue
            self._build_pooled(work)

    def _build_pooled(self, shape: _Shape) -> None:
        sandbox = None
        try:
            provider = self.provider(shape.config.provider)
            sandbox = provider.create(
                shape.config,
                shape.limits,
                pooled=True,
                lifetime_slack=self.pool_max_idle_seconds,
            )
            sandbox.start()
        except Exception as exc:
            log.warning("warm pool: creating a sandbox failed: %s", exc)
            if sandbox is not None:
                self._destroy_quietly(sandbox)
            with self._lock:
                shape.building -= 1
                shape.failures += 1
                shape.retry_at = time.monotonic() + min(30, 2**shape.failures)
                self._pool_wakeup.notify_all()
            return
        with self._lock:
            shape.building -= 1
            shape.failures = 0
            if self._closed or self._shapes.get(shape.key) is not shape:
                keep = False
            else:
                shape.entries.append(_PoolEntry(sandbox=sandbox, ready_at=time.time()))
                keep = True
            self._pool_wakeup.notify_all()
        if not keep:
            self._destroy_quietly(sandbox)
