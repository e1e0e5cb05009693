"""The typed events a run reports to its ``on_event`` sink, in the order they happen.

Every event is a small dataclass; ``to_dict()`` gives ``{"type": "<type>", "ts": <unix time>,
...fields}`` with JSON-serialisable values only, and :func:`event_from_dict` turns such a dict back
into the event. The web layer persists these (adding its own per-run ``seq``) and streams them; the
executor has already redacted known secret values from every string field before the sink sees
an event. docs/agents.md lists the types and their fields.
"""

from __future__ import annotations

import dataclasses
import time
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
