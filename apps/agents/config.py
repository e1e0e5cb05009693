"""What to run: :class:`AgentConfig` (a Claude tool-use loop) and :class:`ScriptConfig` (commands).

Secrets (``secrets={"NAME": "value"}``) follow one rule: a secret enters the sandbox only where the
sandbox configuration asks for it by reference, as an environment value ``secret_ref("NAME")``
(the string ``"${secret:NAME}"``). The executor swaps references for values in its private copy
of the sandbox configuration; the configuration you pass in never holds a value, so it can be
logged and stored. Known secret values are redacted from every event, from tool output before the
model sees it and from the result.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from .interceptors import Interceptor, default_safety_interceptors

DEFAULT_MODEL = "claude-sonnet-5-5"
MODEL_ENV_VAR = "SANDBOXWEB_AGENT_MODEL"

_SECRET_REF = re.compile(r"^\$\{secret:([A-Za-z_][A-Za-z0-9_]*)\}$")


def default_model() -> str:
    return os.environ.get(MODEL_ENV_VAR) or DEFAULT_MODEL


def secret_ref(name: str) -> str:
    """The sandbox env value that asks for ``secrets[name]``: ``env={"TOKEN": secret_ref("T")}``."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"secret names are identifiers, got {name!r}")
    return f"${{secret:{name}}}"


class ConfigError(ValueError):
    """The run configuration cannot work (unknown secret, bad workspace...)."""


def resolve_secret_env(env: Mapping[str, str], secrets: Mapping[str, str]) -> dict[str, str]:
    """``env`` with every ``secret_ref`` replaced by its value; unknown names raise ConfigError."""
    resolved = {}
    for key, value in env.items():
        match = _SECRET_REF.match(value) if isinstance(value, str) else None
        if match is None:
            resolved[key] = value
            continue
        name = match.group(1)
        if name not in secrets:
            raise ConfigError(
                f"sandbox env {key} asks for secret {name!r}, which the run was not given "
                f"(known: {', '.join(sorted(secrets)) or 'none'})"
            )
        resolved[key] = secrets[name]
    return resolved


@dataclass
class _RunSettings:
    """Settings both run kinds share; all keyword-only."""

    _: KW_ONLY
    auto_cleanup: bool = True
    capture_files: bool = False
    capture_patterns: list[str] = field(default_factory=list)
    capture_max_files: int = 200
    capture_max_bytes: int = 20 * 1024 * 1024
    workspace_path: str = "/workspace"
    secrets: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass
class AgentConfig(_RunSettings):
    agent_name: str
    system_prompt: str
    sandbox_config: Any  # apps.sandboxes.SandboxConfig
    model: str = field(default_factory=default_model)
    max_turns: int = 50
    max_tokens_total: int | None = None
    max_cost_usd: float | None = None
    interceptors: list[Interceptor] = field(default_factory=list)
    _: KW_ONLY
    # Run first, before ``interceptors``; ``[]`` removes the default safety set.
    safety_interceptors: list[Interceptor] = field(default_factory=default_safety_interceptors)
    max_tokens_per_turn: int = 8192
    tool_output_limit: int = 30_000  # characters of one tool result sent to the model


@dataclass
class ScriptConfig(_RunSettings):
    """A run without a model: ``commands`` run one after the other through ``shell -c``.

    The first command exiting non-zero fails the run (``end_reason="exit_code"``) unless
    ``continue_on_error`` is set; then every command runs and the run succeeds.
    """

    commands: list[str]
    sandbox_config: Any = None
    agent_name: str = "script"
    _: KW_ONLY
    continue_on_error: bool = False
    command_timeout_seconds: float | None = None
    shell: str = "sh"
    output_limit: int = 64 * 1024  # characters of combined output kept in AgentResult.output
