"""``SandboxedAgentExecutor``: runs a Claude tool-use loop (or a script) inside a fresh sandbox.

One run, whatever its kind, goes: provision the sandbox → run the body (the agent loop or the
commands) → capture files → snapshot stats → destroy the sandbox (unless ``auto_cleanup`` is off)
→ one ``run_finished`` event → :class:`AgentResult`. Every failure ends up in the result with
its type and message; ``execute`` does not raise for anything that happens during a run.

A cancel ``threading.Event`` is watched from a separate thread: once it is set the sandbox is
destroyed at once (killing whatever command runs in it) and the open model stream is closed; the
loop then ends with ``end_reason="cancelled"``.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from apps.sandboxes import TextDecoder
from apps.sandboxes.errors import SandboxError

from . import events as ev
from . import paths
from .capture import capture_files
from .config import AgentConfig, ConfigError, ScriptConfig, resolve_secret_env
from .interceptors import Interceptor, ToolBlocked, ToolContext, ToolResult
from .llm import ModelCallCancelled, ModelCallFailed, RetryInfo, RetryPolicy, stream_message
from .pricing import cost_usd
from .redaction import Redactor
from .results import (
    AgentResult,
    ErrorInfo,
    RunStats,
    Usage,
    status_for,
)
from .tools import TOOLS, ToolRuntime, as_text, command_timeout, run_tool, tool_definitions

EventSink = Callable[[ev.AgentEvent], None]
CACHE_CONTROL = {"type": "ephemeral"}
CANCEL_POLL_SECONDS = 0.05
# A command ended by one of these hit a limit of the whole run: the run ends with that reason.
KILLING_END_REASONS = {
    "oom": "was killed: the sandbox ran out of memory",
    "output_limit": "was killed: it wrote more output than the sandbox allows",
}


@dataclass
class AgentContext:
    """A live (or kept, with ``auto_cleanup=False``) run, as ``get_context`` returns it."""

    sandbox_id: str
    sandbox: Any
    agent_name: str
    workspace_path: str
    kind: str  # "agent" or "script"
    started_at: float
    stats: RunStats
    usage: Usage
    turn: int = 0
    status: str = "running"
    metadata: dict[str, Any] = field(default_factory=dict)


class RunEnded(Exception):
    """Raised inside a run body to end it with a reason (and an error, unless it succeeded)."""

    def __init__(self, end_reason: str, error: ErrorInfo | None = None, output: str = "") -> None:
        super().__init__(end_reason)
        self.end_reason = end_reason
        self.error = error
        self.output = output


class EventSinkFailed(Exception):
    pass


class SandboxedAgentExecutor:
    def __init__(
        self,
        manager: Any = None,
        client: Any = None,
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._manager = manager
        self._client = client
        self.retry = retry or RetryPolicy()
        self._contexts: dict[str, AgentContext] = {}
        self._lock = threading.Lock()

    # -- dependencies, created on first use ------------------------------------------------

    @property
    def manager(self) -> Any:
        with self._lock:
            if self._manager is None:
                from apps.sandboxes import SandboxManager

                self._manager = SandboxManager()
            return self._manager

    def model_client(self) -> Any:
        """The Anthropic client with SDK retries off (we retry, see llm.py)."""
        with self._lock:
            if self._client is None:
                import anthropic

                self._client = anthropic.Anthropic()
            return self._client.with_options(max_retries=0)

    # -- public API --------------------------------------------------------------------------

    def execute(
        self,
        task: str | None,
        config: AgentConfig | ScriptConfig,
        *,
        on_event: EventSink | None = None,
        cancel: threading.Event | None = None,
    ) -> AgentResult:
        """Run ``task`` with an agent, or a :class:`ScriptConfig`'s commands (``task`` ignored)."""
        if isinstance(config, ScriptConfig):
            return _ScriptRun(self, config, on_event, cancel).run()
        if isinstance(config, AgentConfig):
            return _AgentRun(self, task or "", config, on_event, cancel).run()
        raise TypeError(f"config must be AgentConfig or ScriptConfig, not {type(config).__name__}")

    def execute_script(
        self,
        config: ScriptConfig,
        *,
        on_event: EventSink | None = None,
        cancel: threading.Event | None = None,
    ) -> AgentResult:
        return _ScriptRun(self, config, on_event, cancel).run()

    def execute_parallel(
        self,
        tasks: Iterable[Any],
        *,
        max_concurrency: int = 4,
        on_event: Callable[[int, ev.AgentEvent], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> list[AgentResult]:
        """Run ``(task, config)`` pairs (or ``{"task", "config"}`` dicts), at most
        ``max_concurrency`` at a time. Results come back in input order; a failing run never
        sinks the others (its result carries the error)."""
        items = [_task_item(item) for item in tasks]
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")

        def run_one(index: int) -> AgentResult:
            task, config = items[index]
            sink = None if on_event is None else (lambda event, i=index: on_event(i, event))
            try:
                return self.execute(task, config, on_event=sink, cancel=cancel)
            except Exception as exc:  # execute() should not raise; keep the others going anyway
                return AgentResult(
                    status="error",
                    end_reason="internal_error",
                    error=ErrorInfo.from_exception(exc),
                )

        if not items:
            return []
        with ThreadPoolExecutor(
            max_workers=min(max_concurrency, len(items)), thread_name_prefix="agent"
        ) as pool:
            return list(pool.map(run_one, range(len(items))))

    def get_context(self, sandbox_id: str) -> AgentContext | None:
        with self._lock:
            return self._contexts.get(sandbox_id)

    def list_active(self) -> list[str]:
        """Sandbox ids of the runs in progress and of finished runs kept by auto_cleanup=False."""
        with self._lock:
            return list(self._contexts)

    def cleanup_all(self) -> dict[str, str]:
        """Destroy every sandbox still registered; returns ``{sandbox_id: error}`` for failures."""
        with self._lock:
            contexts = list(self._contexts.values())
        failures = {}
        for context in contexts:
            error = self._destroy(context.sandbox)
            if error:
                failures[context.sandbox_id] = error
            else:
                self._unregister(context.sandbox_id)
        return failures

    # -- internals shared with the runs -------------------------------------------------------

    def _register(self, context: AgentContext) -> None:
        with self._lock:
            self._contexts[context.sandbox_id] = context

    def _unregister(self, sandbox_id: str) -> None:
        with self._lock:
            self._contexts.pop(sandbox_id, None)

    def _destroy(self, sandbox: Any) -> str | None:
        """Destroy through the manager (which forgets it too); ``None`` or the error text."""
        try:
            if not self.manager.destroy_sandbox(sandbox.id):
                sandbox.destroy()  # not (or no longer) the manager's: destroy it directly
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None


def _task_item(item: Any) -> tuple[str | None, AgentConfig | ScriptConfig]:
    if isinstance(item, Mapping):
        return item.get("task"), item["config"]
    task, config = item
    return task, config


# -- one run ----------------------------------------------------------------------------------


class _Run:
    """What every run kind shares: sandbox lifecycle, events, cancel, capture, the result."""

    kind = "run"

    def __init__(
        self,
        executor: SandboxedAgentExecutor,
        config: AgentConfig | ScriptConfig,
        on_event: EventSink | None,
        cancel: threading.Event | None,
    ) -> None:
        self.executor = executor
        self.config = config
        self.on_event = on_event
        self.cancel = cancel or threading.Event()
        self.redactor = Redactor(config.secrets)
        self.stats = RunStats()
        self.usage = Usage()
        self.sandbox: Any = None
        self.context: AgentContext | None = None
        self.workspace = paths.resolve("", config.workspace_path)
        self.deadline: float | None = None
        self.turns = 0
        self._emit_lock = threading.Lock()
        self._sink_error: BaseException | None = None
        self._done = threading.Event()
        self._sandbox_destroyed = False
        self._cleanup_error: str | None = None
        self._stream: Any = None

    # events ---------------------------------------------------------------------------------

    def emit(self, event: ev.AgentEvent) -> None:
        if self.on_event is None or self._sink_error is not None:
            return
        event = self.redactor.value(event)
        with self._emit_lock:
            try:
                self.on_event(event)
            except Exception as exc:
                self._sink_error = exc
                raise EventSinkFailed(f"on_event failed on a {event.type} event: {exc}") from exc

    # lifecycle ------------------------------------------------------------------------------

    def run(self) -> AgentResult:
        started = time.monotonic()
        end_reason, error, output = "internal_error", None, ""
        try:
            self.provision()
            self.start_cancel_watcher()
            end_reason, output = self.body()
        except RunEnded as ended:
            end_reason, error, output = ended.end_reason, ended.error, ended.output
        except EventSinkFailed as exc:
            end_reason, error = "internal_error", ErrorInfo("EventSinkFailed", str(exc))
        except ConfigError as exc:
            end_reason, error = "config_error", ErrorInfo.from_exception(exc)
        except SandboxError as exc:
            end_reason, error = self.sandbox_failure(exc)
        except Exception as exc:
            end_reason = "internal_error"
            error = ErrorInfo(
                type(exc).__name__,
                f"{exc} (at {traceback.extract_tb(exc.__traceback__)[-1].name})",
            )
        if self.cancel.is_set() and end_reason not in ("end_turn", "completed"):
            end_reason, error = "cancelled", ErrorInfo("Cancelled", "the run was cancelled")
        return self.finish(started, end_reason, error, output)

    def sandbox_failure(self, exc: SandboxError) -> tuple[str, ErrorInfo]:
        reason = self.sandbox_end_reason()
        if reason:
            return reason, ErrorInfo.from_exception(exc)
        if self.sandbox is None:
            return "sandbox_error", ErrorInfo.from_exception(exc)
        return "crashed", ErrorInfo.from_exception(exc)

    def provision(self) -> None:
        from apps.sandboxes import SandboxConfig

        base = self.config.sandbox_config or SandboxConfig()
        env = resolve_secret_env(dict(base.env), self.config.secrets)
        sandbox_config = base.replace(env=env) if env != dict(base.env) else base
        workdir = paths.resolve("", sandbox_config.workdir)
        if self.workspace != workdir and not self.workspace.startswith(workdir + "/"):
            raise ConfigError(
                f"workspace_path {self.workspace} must be the sandbox workdir {workdir} "
                "or a directory below it"
            )
        self.emit(ev.StatusChanged(status="provisioning", message=self.config.agent_name))
        self.sandbox = self.executor.manager.create_sandbox(sandbox_config)
        self.context = AgentContext(
            sandbox_id=self.sandbox.id,
            sandbox=self.sandbox,
            agent_name=self.config.agent_name,
            workspace_path=self.workspace,
            kind=self.kind,
            started_at=time.time(),
            stats=self.stats,
            usage=self.usage,
        )
        self.executor._register(self.context)
        if str(getattr(self.sandbox, "state", "running")) != "running":
            self.sandbox.start()
        self.deadline = getattr(self.sandbox, "deadline", None)
        if self.workspace != workdir:
            self.sandbox.execute("mkdir", ["-p", self.workspace])
        self.emit(ev.StatusChanged(status="running", sandbox_id=self.sandbox.id))

    def remaining_seconds(self) -> float | None:
        if self.deadline is None:
            return None
        return self.deadline - time.time()

    def sandbox_end_reason(self) -> str | None:
        if self.sandbox is None:
            return None
        reason = getattr(self.sandbox, "end_reason", None)
        if reason in ("oom", "timeout", "disk_limit", "output_limit", "crashed"):
            return str(reason)
        remaining = self.remaining_seconds()
        if remaining is not None and remaining <= 0:
            return "timeout"
        return None

    def check_limits(self) -> None:
        """End the run if it was cancelled or its sandbox ended (oom, deadline...)."""
        if self.cancel.is_set():
            raise RunEnded("cancelled", ErrorInfo("Cancelled", "the run was cancelled"))
        reason = self.sandbox_end_reason()
        if reason:
            message = getattr(self.sandbox, "end_message", None) or f"the sandbox ended: {reason}"
            raise RunEnded(reason, ErrorInfo("SandboxEnded", message))

    def start_cancel_watcher(self) -> None:
        def watch() -> None:
            while not self._done.is_set():
                if self.cancel.wait(CANCEL_POLL_SECONDS):
                    break
            if self._done.is_set() or not self.cancel.is_set():
                return
            stream = self._stream
            if stream is not None:
                with contextlib.suppress(Exception):  # it may be closed already
                    stream.close()
            self._cleanup_error = self.executor._destroy(self.sandbox)
            self._sandbox_destroyed = self._cleanup_error is None

        threading.Thread(target=watch, name="agent-cancel-watch", daemon=True).start()

    def capture(self) -> tuple[list, dict | None]:
        if not self.config.capture_files or self.sandbox is None or self._sandbox_destroyed:
            return [], None
        if self.cancel.is_set():
            return [], None
        self.emit(ev.StatusChanged(status="capturing", sandbox_id=self.sandbox.id))
        files, report = capture_files(
            self.sandbox,
            self.workspace,
            list(self.config.capture_patterns),
            max_files=self.config.capture_max_files,
            max_bytes=self.config.capture_max_bytes,
        )
        report_dict = report.to_dict()
        self.emit(
            ev.FilesCaptured(
                count=report.count,
                total_bytes=report.total_bytes,
                files=[f.to_dict() for f in files],
                skipped=report.skipped,
                limit_hit=report.limit_hit,
            )
        )
        return files, report_dict

    def finish(
        self, started: float, end_reason: str, error: ErrorInfo | None, output: str
    ) -> AgentResult:
        files: list = []
        try:
            files, self.stats.capture = self.capture()
        except Exception as exc:
            self.stats.capture = {"error": f"{type(exc).__name__}: {exc}"}
        if self.sandbox is not None and not self._sandbox_destroyed and not self.cancel.is_set():
            try:
                snapshot = self.sandbox.get_stats()
                self.stats.sandbox = {
                    k: v for k, v in vars(snapshot).items() if not k.startswith("_")
                }
            except Exception as exc:
                self.stats.sandbox = {"error": f"{type(exc).__name__}: {exc}"}
        self._done.set()
        if self.sandbox is not None:
            if self.config.auto_cleanup or self.cancel.is_set():
                if not self._sandbox_destroyed:
                    with contextlib.suppress(EventSinkFailed):
                        self.emit(
                            ev.StatusChanged(status="cleaning_up", sandbox_id=self.sandbox.id)
                        )
                    self._cleanup_error = self.executor._destroy(self.sandbox)
                self.executor._unregister(self.sandbox.id)
            elif self.context is not None:
                self.context.status = status_for(end_reason)
        if self._cleanup_error and error is None:
            error = ErrorInfo("CleanupFailed", self._cleanup_error)
        status = status_for(end_reason)
        result = AgentResult(
            status=status,
            end_reason=end_reason,
            output=self.redactor.text(output),
            error=self.redactor.value(error),
            files=files,
            stats=self.stats,
            usage=self.usage,
            turns=self.turns,
            duration_ms=(time.monotonic() - started) * 1000,
            sandbox_id=self.sandbox.id if self.sandbox is not None else None,
        )
        if self._cleanup_error:
            result.stats.sandbox = {
                **(result.stats.sandbox or {}),
                "cleanup_error": self._cleanup_error,
            }
        with contextlib.suppress(EventSinkFailed):
            self.emit(
                ev.RunFinished(
                    status=result.status,
                    end_reason=result.end_reason,
                    error=vars(result.error).copy() if result.error else None,
                    output=result.output,
                    turns=result.turns,
                    duration_ms=round(result.duration_ms, 1),
                    usage=result.usage.to_dict(),
                    files=[f.to_dict() for f in result.files],
                )
            )
        if self._sink_error is not None and result.error is None:
            result.status, result.end_reason = "error", "internal_error"
            result.error = ErrorInfo("EventSinkFailed", str(self._sink_error))
        return result

    def output_callback(self, **where: Any) -> Callable[[str, bytes], None]:
        """An ``on_output`` for sandbox.execute: decoded, redacted ``log`` events per stream."""
        decoders: dict[str, TextDecoder] = {}
        redactors: dict[str, Any] = {}

        def on_output(stream: str, chunk: bytes | str) -> None:
            if stream not in decoders:
                decoders[stream] = TextDecoder()
                redactors[stream] = self.redactor.stream()
            text = chunk if isinstance(chunk, str) else decoders[stream].feed(chunk)
            text = redactors[stream].feed(text)
            if text:
                self.emit(ev.LogOutput(stream=stream, text=text, **where))

        def flush() -> None:
            for stream, redactor in redactors.items():
                rest = redactor.feed(decoders[stream].flush()) + redactor.flush()
                if rest:
                    self.emit(ev.LogOutput(stream=stream, text=rest, **where))

        on_output.flush = flush  # type: ignore[attr-defined]
        return on_output

    def body(self) -> tuple[str, str]:
        raise NotImplementedError


class _ScriptRun(_Run):
    kind = "script"

    def body(self) -> tuple[str, str]:
        config: ScriptConfig = self.config  # type: ignore[assignment]
        log: list[str] = []
        for index, command in enumerate(config.commands):
            self.check_limits()
            self.emit(ev.CommandStarted(index=index, command=command))
            on_output = self.output_callback(command_index=index)
            try:
                result = self.sandbox.execute(
                    config.shell,
                    ["-c", command],
                    workdir=self.workspace,
                    timeout=command_timeout(
                        config.command_timeout_seconds, self.remaining_seconds()
                    ),
                    on_output=on_output,
                )
            finally:
                on_output.flush()
            self.stats.commands_executed += 1
            log.append(as_text(result.stdout) + as_text(result.stderr))
            output = _tail("".join(log), config.output_limit)
            self.emit(
                ev.CommandFinished(
                    index=index,
                    command=command,
                    exit_code=result.exit_code,
                    duration_ms=round(result.duration_ms, 1),
                    timed_out=bool(result.timed_out),
                )
            )
            self.check_limits()
            exec_end = getattr(result, "end_reason", None)
            if exec_end in KILLING_END_REASONS or result.timed_out:
                reason = str(exec_end or "timeout")
                why = KILLING_END_REASONS.get(reason, "timed out and was killed")
                raise RunEnded(
                    reason,
                    ErrorInfo("CommandKilled", f"command {index + 1} ({command!r}) {why}"),
                    output,
                )
            if result.exit_code != 0:
                self.stats.tool_errors += 1
                if not config.continue_on_error:
                    raise RunEnded(
                        "exit_code",
                        ErrorInfo(
                            "CommandFailed",
                            f"command {index + 1} ({command!r}) exited with {result.exit_code}",
                        ),
                        output,
                    )
        return "completed", _tail("".join(log), config.output_limit)


class _AgentRun(_Run):
    kind = "agent"

    def __init__(self, executor, task, config, on_event, cancel) -> None:
        super().__init__(executor, config, on_event, cancel)
        self.task = task
        self.interceptors: list[Interceptor] = [*config.safety_interceptors, *config.interceptors]
        self.messages: list[dict] = [{"role": "user", "content": [{"type": "text", "text": task}]}]
        self.last_text = ""
        self.limit_hit: tuple[str, str] | None = None  # set by a command the kernel killed

    def body(self) -> tuple[str, str]:
        config: AgentConfig = self.config  # type: ignore[assignment]
        client = self.executor.model_client()
        for turn in range(1, config.max_turns + 1):
            self.check_limits()
            self.turns = turn
            if self.context is not None:
                self.context.turn = turn
            message = self.call_model(client, turn)
            tool_uses = [b for b in message.content if b.type == "tool_use"]
            text = "".join(b.text for b in message.content if b.type == "text")
            if text:
                self.last_text = text
            self.emit(
                ev.AssistantMessage(
                    turn=turn, text=text, stop_reason=message.stop_reason, tool_calls=len(tool_uses)
                )
            )
            self.messages.append({"role": "assistant", "content": assistant_content(message)})
            self.account(turn, message)
            if message.stop_reason == "pause_turn":
                continue
            if message.stop_reason != "tool_use" or not tool_uses:
                return self.stop_for(message.stop_reason)
            self.check_limits()
            results = [self.run_tool_call(turn, block) for block in tool_uses]
            self.messages.append({"role": "user", "content": results})
            self.check_limits()
            if self.limit_hit is not None:
                reason, message = self.limit_hit
                raise RunEnded(reason, ErrorInfo("LimitExceeded", message), self.last_text)
        raise RunEnded(
            "max_turns",
            ErrorInfo("MaxTurnsReached", f"the agent used all {config.max_turns} turns"),
            self.last_text,
        )

    def stop_for(self, stop_reason: str | None) -> tuple[str, str]:
        if stop_reason in ("end_turn", "stop_sequence", None):
            return "end_turn", self.last_text
        if stop_reason == "max_tokens":
            raise RunEnded(
                "max_tokens",
                ErrorInfo(
                    "MaxTokens",
                    "the model's reply hit max_tokens_per_turn "
                    f"({self.config.max_tokens_per_turn})",
                ),
                self.last_text,
            )
        raise RunEnded(
            stop_reason,
            ErrorInfo("ModelStopped", f"the model stopped: {stop_reason}"),
            self.last_text,
        )

    # the model ------------------------------------------------------------------------------

    def request(self) -> dict:
        config: AgentConfig = self.config  # type: ignore[assignment]
        tools = tool_definitions()
        tools[-1] = {**tools[-1], "cache_control": CACHE_CONTROL}
        messages = copy.deepcopy(self.messages)
        last = messages[-1]["content"]
        if isinstance(last, list) and last:
            last[-1] = {**last[-1], "cache_control": CACHE_CONTROL}
        return {
            "model": config.model,
            "max_tokens": config.max_tokens_per_turn,
            "system": [
                {"type": "text", "text": config.system_prompt, "cache_control": CACHE_CONTROL}
            ],
            "tools": tools,
            "messages": messages,
        }

    def call_model(self, client: Any, turn: int) -> Any:
        config: AgentConfig = self.config  # type: ignore[assignment]
        self.emit(ev.TurnStarted(turn=turn, model=config.model))
        text_redactor = self.redactor.stream()

        def on_text(piece: str) -> None:
            piece = text_redactor.feed(piece)
            if piece:
                self.emit(ev.TextDelta(turn=turn, text=piece))

        def on_retry(info: RetryInfo) -> None:
            self.stats.api_retries += 1
            self.emit(
                ev.ApiRetry(
                    turn=turn,
                    attempt=info.attempt,
                    max_retries=self.executor.retry.max_retries,
                    status_code=info.status_code,
                    error_type=info.error_type,
                    message=info.message,
                    delay_s=round(info.delay_s, 3),
                )
            )

        def on_stream(stream: Any) -> None:
            self.stats.api_requests += stream is not None
            self._stream = stream

        try:
            message = stream_message(
                client,
                self.request(),
                policy=self.executor.retry,
                cancel=self.cancel,
                on_text=on_text,
                on_retry=on_retry,
                on_stream=on_stream,
            )
        except ModelCallCancelled:
            raise RunEnded(
                "cancelled", ErrorInfo("Cancelled", "the run was cancelled"), self.last_text
            ) from None
        except ModelCallFailed as failure:
            raise RunEnded(
                failure.end_reason, ErrorInfo(failure.error_type, failure.message), self.last_text
            ) from None
        rest = text_redactor.flush()
        if rest:
            self.emit(ev.TextDelta(turn=turn, text=rest))
        return message

    def account(self, turn: int, message: Any) -> None:
        config: AgentConfig = self.config  # type: ignore[assignment]
        usage = message.usage
        delta = Usage(
            input_tokens=usage.input_tokens or 0,
            output_tokens=usage.output_tokens or 0,
            cache_read_tokens=usage.cache_read_input_tokens or 0,
            cache_write_tokens=usage.cache_creation_input_tokens or 0,
        )
        delta.cost_usd = cost_usd(
            config.model,
            input_tokens=delta.input_tokens,
            output_tokens=delta.output_tokens,
            cache_read_tokens=delta.cache_read_tokens,
            cache_write_tokens=delta.cache_write_tokens,
        )
        self.usage.add(delta)
        self.emit(ev.UsageUpdate(turn=turn, delta=delta.to_dict(), total=self.usage.to_dict()))
        if (
            config.max_tokens_total is not None
            and self.usage.total_tokens >= config.max_tokens_total
        ):
            raise RunEnded(
                "budget",
                ErrorInfo(
                    "BudgetExhausted",
                    f"token budget used up: {self.usage.total_tokens} of "
                    f"{config.max_tokens_total} tokens",
                ),
                self.last_text,
            )
        if config.max_cost_usd is not None and self.usage.cost_usd >= config.max_cost_usd:
            raise RunEnded(
                "budget",
                ErrorInfo(
                    "BudgetExhausted",
                    f"cost budget used up: ${self.usage.cost_usd:.4f} "
                    f"of ${config.max_cost_usd:.4f}",
                ),
                self.last_text,
            )

    # tools ----------------------------------------------------------------------------------

    def run_tool_call(self, turn: int, block: Any) -> dict:
        config: AgentConfig = self.config  # type: ignore[assignment]
        name, tool_use_id = block.name, block.id
        params = block.input if isinstance(block.input, dict) else {}
        self.stats.tool_calls += 1
        self.emit(ev.ToolCall(turn=turn, tool_use_id=tool_use_id, tool=name, input=dict(params)))
        started = time.monotonic()
        on_output = self.output_callback(tool_use_id=tool_use_id)
        context = ToolContext(
            tool_name=name,
            tool_use_id=tool_use_id,
            turn=turn,
            agent_name=config.agent_name,
            workspace_path=self.workspace,
            sandbox=self.sandbox,
            run=self.context,
        )
        try:
            result = self.intercepted(name, dict(params), context, on_output)
        finally:
            on_output.flush()
        killed_by = result.metadata.get("end_reason")
        if killed_by in KILLING_END_REASONS and self.limit_hit is None:
            self.limit_hit = (str(killed_by), f"a {name} command {KILLING_END_REASONS[killed_by]}")
        content, truncated = cap_output(result.content, config.tool_output_limit)
        content = self.redactor.text(content)
        if result.is_error:
            self.stats.tool_errors += 1
        self.emit(
            ev.ToolFinished(
                turn=turn,
                tool_use_id=tool_use_id,
                tool=name,
                output=content,
                is_error=result.is_error,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
                truncated=truncated,
            )
        )
        return {
            "type": "tool_result",
            "tool_use_id": tool_use_id,
            "content": content,
            "is_error": result.is_error,
        }

    def intercepted(
        self, name: str, params: dict, context: ToolContext, on_output: Any
    ) -> ToolResult:
        matching = [i for i in self.interceptors if i.matches(name)]
        tool = TOOLS.get(name)
        answered: ToolResult | None = None
        for interceptor in matching:
            if interceptor.before is None:
                continue
            try:
                outcome = interceptor.before(params, context)
            except ToolBlocked as blocked:
                self.stats.blocked_calls += 1
                self.decision(context, interceptor, "before", "blocked", blocked.reason)
                return ToolResult(f"Blocked by {interceptor.name}: {blocked.reason}", is_error=True)
            except Exception as exc:
                self.decision(
                    context, interceptor, "before", "error", f"{type(exc).__name__}: {exc}"
                )
                return ToolResult(
                    f"The {interceptor.name} interceptor failed ({type(exc).__name__}); "
                    "the tool did not run",
                    is_error=True,
                )
            if isinstance(outcome, ToolResult):
                self.decision(context, interceptor, "before", "answered", "")
                answered = outcome
                break
            if isinstance(outcome, dict) and outcome != params:
                params = dict(outcome)
                self.decision(context, interceptor, "before", "modified", "", params)
        if answered is not None:
            result = answered
        elif tool is None:
            result = ToolResult(
                f"Unknown tool {name!r}; available: {', '.join(TOOLS)}", is_error=True
            )
        else:
            result = run_tool(tool, params, self.runtime(on_output, context.tool_use_id))
        for interceptor in matching:
            if interceptor.after is None:
                continue
            try:
                outcome = interceptor.after(result, context)
            except Exception as exc:
                self.decision(
                    context, interceptor, "after", "error", f"{type(exc).__name__}: {exc}"
                )
                continue
            if isinstance(outcome, ToolResult) and outcome != result:
                self.decision(context, interceptor, "after", "result_modified", "")
                result = outcome
        return result

    def decision(
        self,
        context: ToolContext,
        interceptor: Interceptor,
        phase: str,
        decision: str,
        reason: str,
        params: dict | None = None,
    ) -> None:
        self.emit(
            ev.InterceptorDecision(
                tool_use_id=context.tool_use_id,
                tool=context.tool_name,
                interceptor=interceptor.name,
                phase=phase,
                decision=decision,
                reason=reason,
                input=dict(params) if params is not None else None,
            )
        )

    def runtime(self, on_output: Any, tool_use_id: str) -> ToolRuntime:
        def on_file_changed(path: str, action: str, size: int) -> None:
            if action == "created":
                self.stats.files_created += 1
            else:
                self.stats.files_modified += 1
            self.emit(
                ev.FileChanged(
                    path=paths.relative(path, self.workspace),
                    action=action,
                    size=size,
                    tool_use_id=tool_use_id,
                )
            )

        def on_command() -> None:
            self.stats.commands_executed += 1

        return ToolRuntime(
            sandbox=self.sandbox,
            workspace=self.workspace,
            remaining_seconds=self.remaining_seconds,
            on_output=on_output,
            on_file_changed=on_file_changed,
            on_command=on_command,
        )


def assistant_content(message: Any) -> list[dict]:
    """The assistant message as request params (what we send back next turn)."""
    blocks = []
    for block in message.content:
        if block.type == "text":
            if block.text:
                blocks.append({"type": "text", "text": block.text})
        elif block.type == "tool_use":
            blocks.append(
                {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
            )
        else:
            data = block.model_dump(mode="json", exclude_none=True)
            data.pop("parsed_output", None)
            blocks.append(data)
    return blocks


def cap_output(text: str, limit: int) -> tuple[str, bool]:
    """Keep the end of ``text`` (where errors and results usually are), marked when cut."""
    if len(text) <= limit:
        return text, False
    dropped = len(text) - limit
    return f"[output truncated: first {dropped} characters dropped]\n" + text[-limit:], True


def _tail(text: str, limit: int) -> str:
    return cap_output(text, limit)[0]


__all__: Sequence[str] = ["AgentContext", "SandboxedAgentExecutor"]
