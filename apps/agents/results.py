"""What a run returns: :class:`AgentResult` and its parts."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Terminal statuses, the same words as the run states of DESIGN.md section 4.
SUCCEEDED = "succeeded"
FAILED = "failed"
TIMED_OUT = "timed_out"
OOM = "oom"
CANCELLED = "cancelled"
CRASHED = "crashed"
ERROR = "error"

# end_reason -> status, for the reasons that are not plain failures.
STATUS_FOR_END_REASON = {
    "end_turn": SUCCEEDED,
    "completed": SUCCEEDED,
    "timeout": TIMED_OUT,
    "oom": OOM,
    "cancelled": CANCELLED,
    "crashed": CRASHED,
    "auth_error": ERROR,
    "api_error": ERROR,
    "config_error": ERROR,
    "sandbox_error": ERROR,
    "internal_error": ERROR,
}


def status_for(end_reason: str) -> str:
    """``max_turns``, ``budget``, ``exit_code``, ``output_limit``... are failures of the run."""
    return STATUS_FOR_END_REASON.get(end_reason, FAILED)


@dataclass
class ErrorInfo:
    """An error, never swallowed: ``type`` is the exception class (or API error type)."""

    type: str
    message: str

    @classmethod
    def from_exception(cls, exc: BaseException, message: str | None = None) -> ErrorInfo:
        return cls(type=type(exc).__name__, message=message or str(exc) or type(exc).__name__)


@dataclass
class CapturedFile:
    path: str  # relative to the workspace
    size: int
    sha256: str
    content: bytes = field(repr=False)

    def to_dict(self, *, with_content: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path, "size": self.size, "sha256": self.sha256}
        if with_content:
            data["content"] = self.content.decode("utf-8", "replace")
        return data


@dataclass
class Usage:
    input_tokens: int = 0  # uncached input, as the API reports it
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_read_tokens += other.cache_read_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.cost_usd += other.cost_usd

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["cost_usd"] = round(self.cost_usd, 6)
        return data


@dataclass
class RunStats:
    tool_calls: int = 0
    tool_errors: int = 0
    blocked_calls: int = 0
    commands_executed: int = 0  # Bash tool calls and script commands that ran
    files_created: int = 0  # successful Write/Edit only
    files_modified: int = 0
    api_requests: int = 0
    api_retries: int = 0
    capture: dict | None = None  # count, total_bytes, skipped, limit_hit
    sandbox: dict | None = None  # the sandbox's last stats snapshot

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class AgentResult:
    status: str
    end_reason: str
    output: str = ""
    error: ErrorInfo | None = None
    files: list[CapturedFile] = field(default_factory=list)
    stats: RunStats = field(default_factory=RunStats)
    usage: Usage = field(default_factory=Usage)
    turns: int = 0
    duration_ms: float = 0.0
    sandbox_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == SUCCEEDED

    def to_dict(self, *, with_file_content: bool = False) -> dict[str, Any]:
        return {
            "status": self.status,
            "end_reason": self.end_reason,
            "output": self.output,
            "error": dataclasses.asdict(self.error) if self.error else None,
            "files": [f.to_dict(with_content=with_file_content) for f in self.files],
            "stats": self.stats.to_dict(),
            "usage": self.usage.to_dict(),
            "turns": self.turns,
            "duration_ms": round(self.duration_ms, 1),
            "sandbox_id": self.sandbox_id,
        }
