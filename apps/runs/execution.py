"""What a worker does with one run: claim it, run it in a sandbox, record everything, finish it.

Threads of one execution:

- the task thread runs ``SandboxedAgentExecutor.execute`` (the agent loop or the commands);
- the recorder's flusher writes events to the database every ~100 ms (recorder.py);
- the watcher renews the lease every few seconds, and polls the run's state twice a second so
  a ``cancelling`` run is stopped at once (force-killing the sandbox if the executor does not
  let go), and so does a run whose lease this worker lost;
- the sampler records resource samples every ``RUN_STATS_INTERVAL_SECONDS`` and the workspace
  file tree when a tool may have changed it.

The sandbox id is ``sbxrun-<instance>-<run id>-<attempt>``: a redelivered task cannot start a
second sandbox for the same attempt, and the sweeper can tell from the name alone which run a
sandbox serves. ``<instance>`` names the database the run lives in, so two installations (or a
staging copy) sharing one Docker host neither collide on names nor reap each other's sandboxes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from typing import Any

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from apps.agents import (
    DEFAULT_MODEL,
    AgentConfig,
    ConfigError,
    SandboxedAgentExecutor,
    ScriptConfig,
)
from apps.projects.crypto import SecretDecryptionError
from apps.projects.services import project_secret_values
from apps.projects.validation import DEFAULT_E2B_TEMPLATE, E2B_KEY_SECRET
from apps.sandboxes import (
    E2BOptions,
    ResourceLimits,
    SandboxConfig,
    SandboxError,
    SandboxManager,
)

from .config import reclamp
from .exceptions import InvalidTransition, LeaseLost
from .models import Artifact, Run
from .recorder import RunRecorder
from .services import claim_run, expire_stale_runs, renew_lease, requeue_lost_runs, transition

log = logging.getLogger(__name__)
S = Run.Status
MB = 1024 * 1024

SANDBOX_ID_RE = re.compile(r"^sbxrun-([0-9a-z]+)-(\d+)-(\d+)$")
# The sandbox layer's label holding a sandbox's current id (its container name).
SANDBOX_ID_LABEL = "org.sandboxweb.sandbox-id"
WATCH_INTERVAL = 0.5
LEASE_RENEW_EVERY = 10.0
FORCE_KILL_AFTER = 10.0  # seconds after a cancel before the watcher destroys the sandbox itself
GIVE_UP_AFTER = 30.0  # ... and before it records the run as cancelled without the executor
TREE_REFRESH_EVERY = 5.0
MAX_TREE_ENTRIES = 5000
FILE_CHANGING_EVENTS = {"file_changed", "command_finished"}
# The sandbox layer's errors that mean the engine (or the sandbox itself) is gone.
LOST_SANDBOX_ERRORS = {"SandboxUnavailable", "SandboxNotFound"}

_manager: SandboxManager | None = None
_manager_lock = threading.Lock()


def get_manager() -> SandboxManager:
    """This process's sandbox manager (with the warm pool, if SANDBOX_POOL_SIZE > 0)."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = SandboxManager(
                provider="docker",
                owner=os.environ.get("SANDBOX_OWNER") or f"{socket.gethostname()}-{instance_tag()}",
                pool_size=settings.SANDBOX_POOL_SIZE,
                # The instance-wide key; runs of projects with their own key carry it per sandbox.
                provider_options={"e2b": {"options": E2BOptions(api_key=settings.E2B_API_KEY)}},
            )
        return _manager


def reaped_providers() -> list[str]:
    """Docker always; E2B when the server has a key to list its sandboxes with. (Sandboxes made
    with a project's own key are ended by E2B at their deadline, which is always set.)"""
    return ["docker", "e2b"] if settings.E2B_API_KEY else ["docker"]


def close_manager() -> None:
    global _manager
    with _manager_lock:
        manager, _manager = _manager, None
    if manager is not None:
        manager.close()


def instance_tag() -> str:
    """Eight hex digits naming the database this process records runs in (read at call time:
    under pytest that is the test database, the same one the test's worker processes use)."""
    if settings.SANDBOXWEB_INSTANCE:
        return settings.SANDBOXWEB_INSTANCE
    db = connection.settings_dict
    identity = "\0".join(str(db.get(key) or "") for key in ("ENGINE", "HOST", "PORT", "NAME"))
    return hashlib.sha256(identity.encode()).hexdigest()[:8]


def sandbox_id_for(run_id: int, attempt: int) -> str:
    return f"sbxrun-{instance_tag()}-{run_id}-{attempt}"


def parse_sandbox_id(sandbox_id: str) -> tuple[int, int] | None:
    """(run id, attempt) of one of *this* instance's sandbox ids; None for anything else."""
    match = SANDBOX_ID_RE.match(sandbox_id or "")
    if match is None or match.group(1) != instance_tag():
        return None
    return int(match.group(2)), int(match.group(3))


def retry_database(call: Any, *, budget: float, what: str) -> Any:
    """``call()``, retried with backoff while the database does not answer, for up to ``budget``
    seconds (then the last error is raised). Only for writes that are safe to repeat: a
    ``transition`` repeated after its commit was lost finds the state moved and says so."""
    deadline = time.monotonic() + budget
    delay = 0.25
    while True:
        try:
            return call()
        except DatabaseError as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s: the database did not answer (%s); retrying", what, exc)
            with contextlib.suppress(Exception):
                connection.close()
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def lease_owner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def model_client() -> Any:
    import anthropic

    return anthropic.Anthropic(
        api_key=settings.ANTHROPIC_API_KEY, base_url=settings.ANTHROPIC_BASE_URL or None
    )


# -- entry points --------------------------------------------------------------------------------


def execute_run(run_id: int) -> str:
    """Run ``run_id`` if this worker can claim it; returns the final state (or why not)."""
    lease_owner = lease_owner_name()
    run = claim_run(run_id=run_id, lease_owner=lease_owner)
    if run is None:
        return "not-claimed"
    try:
        return RunExecution(run, lease_owner=lease_owner).execute()
    finally:
        close_old_connections()


def sandbox_is_live(labels: dict[str, str]) -> bool:
    """The sweeper's verdict on one sandbox: False when its run is finished, unknown, on another
    attempt or past its deadline. Sandboxes that serve no run are not ours to judge."""
    parsed = parse_sandbox_id(labels.get(SANDBOX_ID_LABEL, ""))
    if parsed is None:
        return True
    run_id, attempt = parsed
    row = Run.objects.filter(pk=run_id).values_list("status", "attempt", "deadline").first()
    if row is None:
        return False
    status, current_attempt, deadline = row
    if status not in Run.ACTIVE or attempt != current_attempt:
        return False
    return deadline is None or deadline > timezone.now()


def sweep() -> dict[str, Any]:
    """Crashed runs, lost queue messages and orphan sandboxes; safe to run anywhere, any time."""
    report: dict[str, Any] = {
        "crashed": expire_stale_runs(),
        "requeued": requeue_lost_runs(),
    }
    report["reaped"] = []
    for provider in reaped_providers():  # one provider failing must not spare the others
        try:
            report["reaped"] += get_manager().reap_orphans(
                is_live=sandbox_is_live, providers=[provider]
            )
        except SandboxError as exc:
            report["reap_error"] = f"{report.get('reap_error', '')}{provider}: {exc} ".strip()
            log.warning("sweep: reaping %s sandboxes failed: %s", provider, exc)
    if any(report.get(key) for key in ("crashed", "requeued", "reaped")):
        log.info("sweep: %s", report)
    return report


# -- one execution --------------------------------------------------------------------------------


class RunExecution:
    def __init__(self, run: Run, *, lease_owner: str) -> None:
        self.run = run
        self.lease_owner = lease_owner
        self.config = reclamp(run.config)
        self.cancel = threading.Event()
        # cancelled | output_limit | lease_lost | database_unavailable
        self.stop_reason: str | None = None
        # While the database does not answer, writes are retried this long before the run is
        # stopped: past its lease the sweeper may end the run anyway, so waiting longer would
        # only keep a sandbox running whose output cannot be recorded.
        self.db_budget = float(settings.RUN_LEASE_SECONDS)
        self.sandbox_id = sandbox_id_for(run.pk, run.attempt)
        self.log_limit = int(self.config.get("log_limit_mb") or settings.RUN_LOG_LIMIT_MB) * MB
        self.hard_limit = self.log_limit * settings.RUN_LOG_HARD_LIMIT_FACTOR
        self.recorder = RunRecorder(
            run,
            lease_owner=lease_owner,
            log_limit_bytes=self.log_limit,
            hard_limit_bytes=self.hard_limit,
            on_limit=self.stop,
            retry_budget=self.db_budget,
        )
        self.manager = get_manager()
        self.sampler = Sampler(self.manager, self.sandbox_id, self.recorder)
        self.watcher = Watcher(self)
        self.executor_done = threading.Event()
        self.sandbox_death: tuple[str, str] | None = None

    def stop(self, reason: str) -> None:
        """Stop the run for ``reason`` (first reason wins)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self.cancel.set()

    def execute(self) -> str:
        self.recorder.start()
        self.watcher.start()
        result = None
        setup_error: str | None = None
        try:
            if self.config.get("clamp_notes") and self.config != self.run.config:
                self.recorder.record_event(
                    "notice", {"message": "; ".join(self.config["clamp_notes"])}
                )
            try:
                run_config = self.build()
            except (ConfigError, SecretDecryptionError, SandboxError, ValueError) as exc:
                setup_error = str(exc)
            else:
                executor = SandboxedAgentExecutor(
                    manager=self.manager,
                    client=model_client() if self.run.kind == Run.Kind.AGENT else None,
                )
                if not connection.in_atomic_block:
                    # While the sandbox runs this thread does no database work (events go
                    # through the recorder's thread, state polling through the watcher's), so
                    # it gives its connection back: two per running run instead of three, which
                    # is what lets 30 runs fit a default PostgreSQL (max_connections=100).
                    connection.close()
                try:
                    result = executor.execute(
                        self.run.task, run_config, on_event=self.sink, cancel=self.cancel
                    )
                finally:
                    self.executor_done.set()
                    self.sampler.stop()
                    if result is not None and result.status == S.FAILED:
                        self.sandbox_death = self.why_the_sandbox_died()
                    if result is not None and not self.cancel.is_set():
                        # One last sample and listing while the sandbox still exists, so even
                        # a run of a few hundred milliseconds keeps its graphs and tree.
                        self.sampler.sample()
                        self.sampler.record_tree(final=True)
                    for sandbox_id, error in executor.cleanup_all().items():
                        log.warning(
                            "run %s: removing %s failed: %s", self.run.pk, sandbox_id, error
                        )
        finally:
            self.executor_done.set()
            self.sampler.stop()
            self.recorder.close()
            self.watcher.stop()
        if self.stop_reason == "lease_lost" or self.recorder.lost:
            return "lease-lost"
        if setup_error is not None:
            return self.finish(S.ERROR, "config_error", setup_error)
        self.store_artifacts(result)
        status, reason, message = self.outcome(result)
        return self.finish(status, reason, message, result=result)

    # -- building the executor's configuration ---------------------------------------------------

    def build(self) -> AgentConfig | ScriptConfig:
        config = self.config
        if self.run.kind == Run.Kind.AGENT and not settings.ANTHROPIC_API_KEY:
            raise ConfigError(
                "ANTHROPIC_API_KEY is not set for the worker, so agent runs cannot call the "
                "model; set it (and ANTHROPIC_BASE_URL for a gateway) and restart the worker."
            )
        secrets = project_secret_values(project_id=self.run.project_id)
        provider = config.get("provider") or "docker"
        image: str | None = config.get("image") or settings.SANDBOX_IMAGE
        e2b = E2BOptions()
        if provider == "e2b":
            key = secrets.get(E2B_KEY_SECRET) or settings.E2B_API_KEY
            if not key:
                raise ConfigError(
                    "This project runs on E2B but no E2B key is available: add a project "
                    "secret named E2B_API_KEY, or set E2B_API_KEY for the worker."
                )
            # On E2B the project's image field names the template.
            e2b = E2BOptions(api_key=key, template=config.get("image") or DEFAULT_E2B_TEMPLATE)
            image = None
        sandbox_config = SandboxConfig(
            provider=provider,
            image=image,
            e2b=e2b,
            limits=ResourceLimits(
                memory_mb=int(config["memory_mb"]),
                cpu_cores=float(config["cpu_cores"]),
                disk_mb=int(config["disk_mb"]),
                timeout_seconds=int(config["timeout_seconds"]),
            ),
            network_mode=config.get("network_mode") or "none",
            env=dict(config.get("env") or {}),
            sandbox_id=self.sandbox_id,
            output_limit_bytes=max(self.hard_limit, 1024 * 1024),
        )
        patterns = list(config.get("capture_patterns") or [])
        common: dict[str, Any] = {
            "auto_cleanup": False,  # we list the workspace once more before it goes
            "capture_files": bool(patterns),
            "capture_patterns": patterns,
            "capture_max_bytes": settings.ARTIFACT_MAX_BYTES,
            "secrets": secrets,
        }
        if self.run.kind == Run.Kind.SCRIPT:
            return ScriptConfig(
                commands=list(self.run.commands),
                sandbox_config=sandbox_config,
                agent_name=config.get("project_name") or "script",
                **common,
            )
        return AgentConfig(
            agent_name=config.get("project_name") or "agent",
            system_prompt=config.get("system_prompt") or "",
            sandbox_config=sandbox_config,
            model=config.get("model") or DEFAULT_MODEL,
            max_turns=int(config.get("max_turns") or 30),
            max_tokens_total=config.get("max_tokens_total"),
            max_cost_usd=config.get("max_cost_usd"),
            **common,
        )

    # -- events from the executor -----------------------------------------------------------------

    def sink(self, event: Any) -> None:
        kind = event.type
        if kind == "status" and getattr(event, "status", "") == "running":
            self.recorder.flush()
            self.mark_running(getattr(event, "sandbox_id", None) or self.sandbox_id)
        self.recorder.record(event)
        if kind in FILE_CHANGING_EVENTS or (
            kind == "tool_result" and getattr(event, "tool", "") == "Bash"
        ):
            self.sampler.mark_dirty()

    def mark_running(self, sandbox_id: str) -> None:
        try:
            retry_database(
                lambda: transition(
                    self.run,
                    to=S.RUNNING,
                    lease_owner=self.lease_owner,
                    fields={"sandbox_id": sandbox_id},
                ),
                budget=self.db_budget,
                what=f"run {self.run.pk}: marking it running",
            )
        except InvalidTransition:
            pass  # cancel requested meanwhile (or a retried commit had landed): carry on
        except LeaseLost:
            self.stop("lease_lost")
        except DatabaseError:
            self.stop("database_unavailable")
        self.sampler.start()

    # -- the end ----------------------------------------------------------------------------------

    def why_the_sandbox_died(self) -> tuple[str, str] | None:
        """A failed run whose sandbox is gone did not fail by itself: (reason, message)."""
        if self.cancel.is_set():
            return None
        sandbox = self.manager.get_sandbox(self.sandbox_id)
        if sandbox is None:
            return None
        try:
            health = sandbox.health_check()
        except SandboxError as exc:
            return "sandbox_lost", str(exc)
        if health.healthy:
            return None
        return str(getattr(sandbox, "end_reason", None) or "crashed"), health.message or ""

    def outcome(self, result: Any) -> tuple[str, str, str]:
        if self.stop_reason == "database_unavailable":
            return (
                S.CRASHED,
                "database_unavailable",
                f"The database did not answer for more than {self.db_budget:.0f} s, so the "
                "worker stopped the sandbox; everything the run printed until then is in the "
                "log.",
            )
        if self.stop_reason == "output_limit":
            return (
                S.FAILED,
                "output_limit",
                f"The run printed more than {self.hard_limit // MB} MB of output; "
                f"the log keeps the first {self.log_limit // MB} MB and the sandbox was killed.",
            )
        if self.sandbox_death is not None:
            reason, detail = self.sandbox_death
            status = {"oom": S.OOM, "timeout": S.TIMED_OUT}.get(reason, S.CRASHED)
            if status == S.CRASHED and reason != "sandbox_lost":
                reason = "crashed"
            return status, reason, f"The sandbox stopped under the run: {detail}"
        error = result.error
        message = error.message if error else ""
        if result.status == S.CRASHED and error is not None and error.type in LOST_SANDBOX_ERRORS:
            # The engine went away under the run (a dockerd restart, a lost host): not the
            # command's fault, and not a crash of ours either.
            return (
                S.CRASHED,
                "sandbox_lost",
                f"The sandbox was lost: its engine stopped answering or removed it ({message})",
            )
        if error is not None and error.type == "ImageNotFound":
            image = self.config.get("image")
            if self.config.get("provider") == "e2b":
                return (
                    S.ERROR,
                    "image_not_found",
                    f"E2B template {image} not found for this E2B key; build it with the E2B "
                    "CLI or use base.",
                )
            return (
                S.ERROR,
                "image_not_found",
                f"image {image} not found on the Docker Engine; build or pull it first.",
            )
        status = result.status if result.status in S.values else S.ERROR
        if status == S.CANCELLED and self.stop_reason == "cancelled":
            message = message or "Cancelled"
        return status, result.end_reason, message

    def finish(self, status: str, reason: str, message: str, *, result: Any = None) -> str:
        fields: dict[str, Any] = {}
        if result is not None:
            fields["turns"] = max(self.run.turns, int(result.turns or 0))
            usage = result.usage
            if usage.total_tokens:
                fields.update(
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    cache_read_tokens=usage.cache_read_tokens,
                    cache_write_tokens=usage.cache_write_tokens,
                    total_tokens=usage.total_tokens,
                    cost_usd=round(usage.cost_usd, 6),
                )
        try:
            run = retry_database(
                lambda: transition(
                    self.run,
                    to=status,
                    reason=reason,
                    message=message[:5000],
                    lease_owner=self.lease_owner,
                    fields=fields,
                ),
                budget=self.db_budget,
                what=f"run {self.run.pk}: recording its end",
            )
        except (InvalidTransition, LeaseLost) as exc:
            log.warning("run %s: could not record the end (%s): %s", self.run.pk, status, exc)
            return "already-ended"
        except DatabaseError as exc:
            # The lease runs out and the sweeper ends the run as crashed; the log says so.
            log.error("run %s: could not record the end (%s): %s", self.run.pk, status, exc)
            return "database-unavailable"
        return run.status

    def store_artifacts(self, result: Any) -> None:
        files = list(getattr(result, "files", None) or [])
        if not files:
            return
        retry_database(
            lambda: self._store_artifacts(files),
            budget=self.db_budget,
            what=f"run {self.run.pk}: storing artifacts",
        )

    def _store_artifacts(self, files: list[Any]) -> None:
        Artifact.objects.bulk_create(
            [
                Artifact(
                    run_id=self.run.pk,
                    path=f.path[:1024],
                    size=f.size,
                    sha256=f.sha256,
                    content=f.content,
                )
                for f in files
            ],
            ignore_conflicts=True,  # a redelivered task may store them again
        )


class Watcher:
    """Lease renewal and cancel detection for one execution (a thread of its own)."""

    def __init__(self, execution: RunExecution) -> None:
        self.execution = execution
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"run-{execution.run.pk}-watcher", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        execution = self.execution
        run_id = execution.run.pk
        last_renew = 0.0
        # Renew well before expiry: a claim takes over a lease the moment it passes, so renewing
        # only every lease length would leave a gap for a redelivered message to start a second
        # attempt of a live run.
        renew_every = min(LEASE_RENEW_EVERY, settings.RUN_LEASE_SECONDS / 3)
        cancel_seen_at: float | None = None
        try:
            while not self._stop.wait(WATCH_INTERVAL):
                now = time.monotonic()
                try:
                    if now - last_renew >= renew_every:
                        status = renew_lease(run_id=run_id, lease_owner=execution.lease_owner)
                        last_renew = now
                        if status is None:
                            execution.stop("lease_lost")
                            return
                    else:
                        status = (
                            Run.objects.filter(pk=run_id).values_list("status", flat=True).first()
                        )
                except Exception as exc:  # the database blinked: try again next round
                    log.warning("run %s: watcher: %s", run_id, exc)
                    connection.close()
                    continue
                if status == S.CANCELLING and cancel_seen_at is None:
                    cancel_seen_at = now
                    execution.stop("cancelled")
                if cancel_seen_at is not None and not execution.executor_done.is_set():
                    self._force(now - cancel_seen_at)
        finally:
            connection.close()

    def _force(self, waited: float) -> None:
        """The executor has not let go of a cancelled run: kill the sandbox, then give up."""
        execution = self.execution
        if waited >= FORCE_KILL_AFTER:
            log.warning("run %s: forcing the sandbox down after a cancel", execution.run.pk)
            try:
                execution.manager.destroy_sandbox(execution.sandbox_id)
            except SandboxError as exc:
                log.warning("run %s: force destroy failed: %s", execution.run.pk, exc)
        if waited >= GIVE_UP_AFTER:
            with contextlib.suppress(InvalidTransition, LeaseLost):
                transition(
                    execution.run,
                    to=S.CANCELLED,
                    reason="cancelled",
                    message="Cancelled (the sandbox was force-killed)",
                    lease_owner=execution.lease_owner,
                )
            self._stop.set()


class Sampler:
    """Resource samples and workspace listings while the sandbox runs (a thread of its own)."""

    def __init__(self, manager: SandboxManager, sandbox_id: str, recorder: RunRecorder) -> None:
        self.manager = manager
        self.sandbox_id = sandbox_id
        self.recorder = recorder
        self.interval = settings.RUN_STATS_INTERVAL_SECONDS
        self._stop = threading.Event()
        self._dirty = threading.Event()
        self._thread: threading.Thread | None = None
        self._tree_digest: str | None = None
        self._tree_lock = threading.Lock()
        self._last_tree = 0.0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name=f"{self.sandbox_id}-sampler", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def mark_dirty(self) -> None:
        self._dirty.set()

    def _sandbox(self) -> Any:
        sandbox = self.manager.get_sandbox(self.sandbox_id)
        if sandbox is None or str(getattr(sandbox, "state", "")) != "running":
            return None
        return sandbox

    def _loop(self) -> None:
        self.sample(first=True)
        # The first listing waits a moment: it must not compete with the run's first command.
        self._last_tree = time.monotonic()
        self._dirty.set()
        next_sample = time.monotonic() + self.interval
        while True:
            now = time.monotonic()
            # A burst of file changes settles into one listing a second at most.
            if self._dirty.is_set() and now - self._last_tree >= 1.0:
                self._dirty.clear()
                self.record_tree()
            if now >= next_sample:
                next_sample = max(next_sample + self.interval, now)
                self.sample()
                if time.monotonic() - self._last_tree >= TREE_REFRESH_EVERY:
                    self.record_tree()
            timeout = next_sample - time.monotonic()
            if self._dirty.is_set():
                timeout = min(timeout, self._last_tree + 1.0 - time.monotonic())
            if self._stop.wait(max(0.05, timeout)):
                return

    def sample(self, *, first: bool = False) -> None:
        sandbox = self._sandbox()
        if sandbox is None:
            return
        try:
            stats = sandbox.get_stats()
        except Exception as exc:  # a sandbox that just ended; the next sample will tell
            log.debug("stats of %s failed: %s", self.sandbox_id, exc)
            return
        self.recorder.record_event(
            "stats",
            {
                # The first CPU figure averages over the few milliseconds since the sandbox
                # started (it reads 300 % on a half core); from the second one on it is real.
                "cpu": None if first else round(stats.cpu_percent, 1),
                "memory_mb": round(stats.memory_usage_mb, 1),
                "memory_limit_mb": round(stats.memory_limit_mb, 1),
                "disk_mb": round(stats.disk_usage_mb, 2),
                "disk_limit_mb": stats.disk_limit_mb,
                "rx_mb": round(stats.network_rx_mb, 3),
                "tx_mb": round(stats.network_tx_mb, 3),
                "pids": stats.pids,
            },
        )

    def record_tree(self, *, final: bool = False) -> None:
        with self._tree_lock:
            self._last_tree = time.monotonic()
            sandbox = self._sandbox()
            if sandbox is None:
                return
            try:
                infos = sandbox.list_files(".", recursive=True)
            except Exception as exc:
                log.debug("listing %s failed: %s", self.sandbox_id, exc)
                return
            root = sandbox.workspace.rstrip("/") + "/"
            entries = sorted(
                [
                    [
                        info.path[len(root) :] if info.path.startswith(root) else info.path,
                        info.size,
                        info.is_dir,
                    ]
                    for info in infos
                ]
            )
            total = len(entries)
            entries = entries[:MAX_TREE_ENTRIES]
            digest = hashlib.sha256(json.dumps(entries).encode()).hexdigest()
            if digest == self._tree_digest and not final:
                return
            self._tree_digest = digest
            self.recorder.record_event(
                "files",
                {
                    "entries": entries,
                    "total": total,
                    "truncated": total > len(entries),
                    "final": final,
                },
            )
