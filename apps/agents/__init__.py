"""Claude agents (and plain scripts) run inside sandboxes; see docs/agents.md.

This package knows nothing of the web: it imports neither Django nor any web app, and reaches
Docker or E2B only through ``apps.sandboxes``. Progress is reported through an ``on_event``
callable given to each run.
"""

from .config import (
    DEFAULT_MODEL,
    AgentConfig,
    ConfigError,
    ScriptConfig,
    secret_ref,
)
from .events import AgentEvent, describe, event_from_dict
from .executor import AgentContext, SandboxedAgentExecutor
from .interceptors import (
    Interceptor,
    ToolBlocked,
    ToolContext,
    ToolResult,
    default_safety_interceptors,
)
from .llm import RetryPolicy
from .results import AgentResult, CapturedFile, ErrorInfo, RunStats, Usage

__all__ = [
    "DEFAULT_MODEL",
    "AgentConfig",
    "AgentContext",
    "AgentEvent",
    "AgentResult",
    "CapturedFile",
    "ConfigError",
    "ErrorInfo",
    "Interceptor",
    "RetryPolicy",
    "RunStats",
    "SandboxedAgentExecutor",
    "ScriptConfig",
    "ToolBlocked",
    "ToolContext",
    "ToolResult",
    "Usage",
    "default_safety_interceptors",
    "describe",
    "event_from_dict",
    "secret_ref",
]
