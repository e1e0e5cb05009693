"""Interceptors: code that sees every tool call before and after it runs, and may change it.

``Interceptor(tool_name, before=None, after=None)``; ``tool_name="*"`` matches every tool.

- ``before(params, ctx)`` returns ``None`` (go on unchanged), a new params ``dict`` (go on with
  those), or a :class:`ToolResult` (answer the model with it; the tool does not run). It may raise
  :class:`ToolBlocked` ``(reason)``: the tool does not run and the model receives an error
  tool_result carrying the reason; the run goes on.
- ``after(result, ctx)`` returns ``None`` (keep the result) or a replacement :class:`ToolResult`.
  It runs for executed and answered calls, not for blocked ones.

Interceptors run in order: the default safety set (``AgentConfig.safety_interceptors``) first,
then ``AgentConfig.interceptors``. Each change they make is reported as an ``interceptor`` event.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .executor import AgentContext


class ToolBlocked(Exception):
    """Raised by a ``before`` interceptor to refuse a tool call; ``reason`` reaches the model."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class ToolResult:
    """What a tool returns to the model. ``metadata`` stays on our side (exit code, path...)."""

    content: str
    is_error: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class ToolContext:
    """What an interceptor may look at: the call, the run, and the sandbox it runs in."""

    tool_name: str
    tool_use_id: str
    turn: int
    agent_name: str
    workspace_path: str
    sandbox: Any
    run: AgentContext | None = None


Before = Callable[[dict, ToolContext], "dict | ToolResult | None"]
After = Callable[[ToolResult, ToolContext], "ToolResult | None"]


@dataclass
class Interceptor:
    tool_name: str
    before: Before | None = None
    after: After | None = None
    name: str = ""  # shown in events; defaults to the hook function's name

    def __post_init__(self) -> None:
        if not self.name:
            hook = self.before or self.after
            self.name = getattr(hook, "__name__", None) or f"interceptor:{self.tool_name}"

    def matches(self, tool_name: str) -> bool:
        return self.tool_name in ("*", tool_name)


# -- the default safety set ------------------------------------------------------------------

_RM_FLAGS = r"(?:-[a-zA-Z]*[rR][a-zA-Z]*|--recursive)"
_ROOTISH = r"(?:/|/\*|~/?|~/\*|\$HOME/?|\$\{HOME\}/?|\$HOME/\*|/\.\*?)"

DESTRUCTIVE_COMMANDS: list[tuple[str, re.Pattern[str]]] = [
    (
        "recursive delete of / or the home directory",
        re.compile(
            rf"\brm\s+(?:-\S+\s+)*{_RM_FLAGS}\s+(?:-\S+\s+)*(?:[\"']?){_ROOTISH}(?:[\"']?)(?:\s|;|&|\||$)"
        ),
    ),
    ("rm --no-preserve-root", re.compile(r"\brm\b[^;&|]*--no-preserve-root")),
    ("fork bomb", re.compile(r"(\S+)\s*\(\)\s*\{\s*\1\s*\|\s*\1\s*&\s*\}\s*;?\s*\1")),
    ("making a filesystem", re.compile(r"(?:^|[\s;&|(])mkfs(?:\.\w+)?\b")),
    ("writing a block device with dd", re.compile(r"\bdd\b[^;&|]*\bof=/dev/(?!null\b|zero\b)")),
    (
        "redirecting output onto a disk device",
        re.compile(r">\s*/dev/(?:sd|hd|vd|xvd|nvme|mmcblk|dm-)\w*"),
    ),
    (
        "shutting the machine down",
        re.compile(r"(?:^|[;&|(]\s*|\bsudo\s+)(?:shutdown|reboot|halt|poweroff)\b"),
    ),
    (
        "recursive chmod/chown of /",
        re.compile(r"\bch(?:mod|own)\s+(?:-\S+\s+)*-[a-zA-Z]*R[a-zA-Z]*\s+(?:\S+\s+)?/(?:\s|$|;)"),
    ),
]


def refuse_destructive_commands(params: dict, ctx: ToolContext) -> None:
    """Refuse Bash commands that are clearly destructive, whatever the sandbox would allow."""
    command = params.get("command")
    if not isinstance(command, str):
        return None
    for description, pattern in DESTRUCTIVE_COMMANDS:
        if pattern.search(command):
            raise ToolBlocked(
                f"refused by the safety policy ({description}). Do the task without this command."
            )
    return None


def default_safety_interceptors() -> list[Interceptor]:
    """The safety set every run starts with; pass ``safety_interceptors=[]`` to remove it."""
    return [
        Interceptor("Bash", before=refuse_destructive_commands, name="safety.destructive_commands"),
    ]
