"""The typed events a run reports to its ``on_event`` sink, in the order they happen.

Every event is a small dataclass; ``to_dict()`` gives ``{"type": "<type>", "ts": <unix time>,
...fields}`` with JSON-serialisable values only, and :func:`event_from_dict` turns such a dict back
into the event. The web layer persists these (adding its own per-run ``seq``) and streams them; the
executor has already redacted known secret values from every string field before the sink sees
an event. docs/agents.md lists the types and their fields.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

EVENT_TYPES: dict[str, type[AgentEvent]] = {}


@dataclass(kw_only=True)
class AgentEvent:
    type: ClassVar[str] = "event"
    ts: float = field(default_factory=time.time)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        EVENT_TYPES[cls.type] = cls

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **dataclasses.asdict(self)}


def event_from_dict(data: dict[str, Any]) -> AgentEvent:
    values = dict(data)
    cls = EVENT_TYPES[values.pop("type")]
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


# -- run lifecycle ---------------------------------------------------------------------------


@dataclass(kw_only=True)
class StatusChanged(AgentEvent):
    """The run moved on: ``provisioning`` → ``running`` → ``capturing`` → ``cleaning_up``."""

    type: ClassVar[str] = "status"
    status: str
    message: str = ""
    sandbox_id: str | None = None


@dataclass(kw_only=True)
class RunFinished(AgentEvent):
    """The last event of every run, success or not; mirrors the :class:`AgentResult`."""

    type: ClassVar[str] = "run_finished"
    status: str
    end_reason: str
    error: dict | None = None
    output: str = ""
    turns: int = 0
    duration_ms: float = 0.0
    usage: dict = field(default_factory=dict)
    files: list[dict] = field(default_factory=list)


# -- the model -------------------------------------------------------------------------------


@dataclass(kw_only=True)
class TurnStarted(AgentEvent):
    """A request to the model is about to be sent (turn numbers start at 1)."""

    type: ClassVar[str] = "turn_started"
    turn: int
    model: str


@dataclass(kw_only=True)
class TextDelta(AgentEvent):
    """A piece of the model's text, as it streams in."""

    type: ClassVar[str] = "text_delta"
    turn: int
    text: str


@dataclass(kw_only=True)
class AssistantMessage(AgentEvent):
    """The model's whole message of one turn (its text; tool calls follow as ``tool_call``)."""

    type: ClassVar[str] = "assistant_message"
    turn: int
    text: str
    stop_reason: str | None
    tool_calls: int = 0


@dataclass(kw_only=True)
class UsageUpdate(AgentEvent):
    """Tokens and cost of the turn just finished (``delta``) and of the run so far (``total``).

    Both hold ``input_tokens``, ``output_tokens``, ``cache_read_tokens``, ``cache_write_tokens``
    and ``cost_usd``.
    """

    type: ClassVar[str] = "usage"
    turn: int
    delta: dict
    total: dict


@dataclass(kw_only=True)
class ApiRetry(AgentEvent):
    """The model API failed in a way worth retrying; the request is sent again after a pause.

    Text deltas of the same turn sent before it belong to the abandoned attempt.
    """

    type: ClassVar[str] = "api_retry"
    turn: int
    attempt: int
    max_retries: int
    status_code: int | None
    error_type: str
    message: str
    delay_s: float


# -- tools -----------------------------------------------------------------------------------


@dataclass(kw_only=True)
class ToolCall(AgentEvent):
    """The model asked for a tool, with this input (before interceptors)."""

    type: ClassVar[str] = "tool_call"
    turn: int
    tool_use_id: str
    tool: str
    input: dict


@dataclass(kw_only=True)
class InterceptorDecision(AgentEvent):
    """An interceptor changed something.

    ``decision`` is ``modified`` (new params), ``blocked`` (the model gets an error with
    ``reason``), ``answered`` (a result without executing) or ``result_modified`` (after).
    """

    type: ClassVar[str] = "interceptor"
    tool_use_id: str
    tool: str
    interceptor: str
    phase: str
    decision: str
    reason: str = ""
    input: dict | None = None


@dataclass(kw_only=True)
class LogOutput(AgentEvent):
    """Output of a running command as it arrives: a Bash tool call or a script command."""

    type: ClassVar[str] = "log"
    stream: str
    text: str
    tool_use_id: str | None = None
    command_index: int | None = None


@dataclass(kw_only=True)
class ToolFinished(AgentEvent):
    """What the model gets back for one tool call (``output`` already capped and redacted)."""

    type: ClassVar[str] = "tool_result"
    turn: int
    tool_use_id: str
    tool: str
    output: str
    is_error: bool
    duration_ms: float
    truncated: bool = False


@dataclass(kw_only=True)
class FileChanged(AgentEvent):
    """A file tool (Write, Edit) created or modified a file; ``path`` is workspace-relative."""

    type: ClassVar[str] = "file_changed"
    path: str
    action: str
    size: int
    tool_use_id: str | None = None


# -- script runs -----------------------------------------------------------------------------


@dataclass(kw_only=True)
class CommandStarted(AgentEvent):
    type: ClassVar[str] = "command_started"
    index: int
    command: str


@dataclass(kw_only=True)
class CommandFinished(AgentEvent):
    type: ClassVar[str] = "command_finished"
    index: int
    command: str
    exit_code: int
    duration_ms: float
    timed_out: bool = False


# -- the end ---------------------------------------------------------------------------------


@dataclass(kw_only=True)
class FilesCaptured(AgentEvent):
    """File capture finished; ``skipped`` says which files were left out and why."""

    type: ClassVar[str] = "files_captured"
    count: int
    total_bytes: int
    files: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    limit_hit: str | None = None


def _short(value: object, limit: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_DESCRIBE: dict[str, Callable[[Any], str]] = {
    "status": lambda e: f"[status] {e.status} {e.sandbox_id or e.message}".rstrip(),
    "run_finished": lambda e: (
        f"[finished] {e.status} ({e.end_reason}) after {e.turns} turns, {e.duration_ms:.0f} ms"
        + (f": {e.error['type']}: {e.error['message']}" if e.error else "")
    ),
    "turn_started": lambda e: f"[turn {e.turn}] asking {e.model}",
    "text_delta": lambda e: e.text,
    "assistant_message": lambda e: f"[turn {e.turn}] assistant: {_short(e.text) or '(no text)'}",
    "usage": lambda e: (
        f"[usage] +{e.delta.get('input_tokens', 0)} in, +{e.delta.get('output_tokens', 0)} "
        f"out; run total ${e.total.get('cost_usd', 0.0):.4f}"
    ),
    "api_retry": lambda e: (
        f"[retry] {e.error_type} ({e.status_code}): attempt {e.attempt}/{e.max_retries} "
        f"in {e.delay_s:.2f} s"
    ),
    "tool_call": lambda e: f"[tool] {e.tool} {_short(e.input)}",
    "interceptor": lambda e: (
        f"[interceptor] {e.interceptor} {e.decision} {e.tool}"
        + (f": {e.reason}" if e.reason else "")
    ),
    "log": lambda e: f"    {e.stream}| {_short(e.text, 200)}",
    "tool_result": lambda e: (
        f"[result] {e.tool}{' ERROR' if e.is_error else ''} ({e.duration_ms:.0f} ms): "
        f"{_short(e.output)}"
    ),
    "file_changed": lambda e: f"[file] {e.action} {e.path} ({e.size} bytes)",
    "command_started": lambda e: f"[command {e.index}] $ {e.command}",
    "command_finished": lambda e: (
        f"[command {e.index}] exit {e.exit_code} in {e.duration_ms:.0f} ms"
        + (" (timed out)" if e.timed_out else "")
    ),
    "files_captured": lambda e: (
        f"[capture] {e.count} files, {e.total_bytes} bytes"
        + (f"; skipped {len(e.skipped)}" if e.skipped else "")
        + (f"; limit hit: {e.limit_hit}" if e.limit_hit else "")
    ),
}


def describe(event: AgentEvent) -> str:
    """One human-readable line for an event (for consoles and logs; the UI uses ``to_dict``)."""
    render = _DESCRIBE.get(event.type)
    return render(event) if render else f"[{event.type}] {_short(event.to_dict())}"
