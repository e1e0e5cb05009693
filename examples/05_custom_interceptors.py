"""Example 5: interceptors watch, change and refuse an agent's tool calls.

    uv run python examples/05_custom_interceptors.py

Three interceptors, run in order after the default safety set:

- a Bash auditor that *blocks* ``rm -rf``, ``dd if=`` and fork bombs: the tool does not run and
  the model gets an error tool_result with the reason, then carries on;
- a Write logger that records every file an agent writes (path and size) once it is written;
- a ``*`` interceptor that tags every Bash command with a timeout and times every tool.

With ANTHROPIC_API_KEY set the real model is asked to clean up and rebuild a directory (and may
or may not try a forbidden command); without it the loopback Messages API server
(tests/support/anthropic_server.py) replays a conversation that does, so the block is shown.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apps.agents import (
    AgentConfig,
    Interceptor,
    SandboxedAgentExecutor,
    ToolBlocked,
    ToolResult,
    describe,
)
from apps.sandboxes import ResourceLimits, SandboxConfig, SandboxManager
from tests.support.anthropic_server import Reply, real_or_loopback, text, tool_use

TASK = (
    "Create data/a.txt and data/b.txt, then remove the data directory completely and recreate "
    "it with a single file data/fresh.txt. List the workspace at the end."
)

FORBIDDEN = [
    (re.compile(r"\brm\s+-[a-zA-Z]*r[a-zA-Z]*f|\brm\s+-[a-zA-Z]*f[a-zA-Z]*r"), "rm -rf"),
    (re.compile(r"\bdd\s+if="), "dd if="),
    (re.compile(r":\(\)\s*\{\s*:\|:&\s*\};:"), "fork bomb"),
]

audit_log: list[str] = []
written: list[tuple[str, int]] = []
started_at: dict[str, float] = {}


def bash_auditor(params: dict, ctx) -> None:
    command = params.get("command", "")
    audit_log.append(f"turn {ctx.turn}: $ {command}")
    for pattern, name in FORBIDDEN:
        if pattern.search(command):
            audit_log.append(f"  blocked ({name})")
            raise ToolBlocked(
                f"`{name}` is not allowed in this project; delete files one by one (rm FILE) "
                "and empty directories with rmdir"
            )


def write_logger(result: ToolResult, ctx) -> None:
    if not result.is_error:
        written.append((result.metadata["path"], result.metadata["size"]))
    return None  # keep the result as it is


def start_timer(params: dict, ctx) -> dict:
    started_at[ctx.tool_use_id] = time.monotonic()
    if ctx.tool_name == "Bash" and "timeout" not in params:
        return {**params, "timeout": 30_000}  # a changed input: reported as "modified"
    return params


def stop_timer(result: ToolResult, ctx) -> ToolResult:
    elapsed = (time.monotonic() - started_at.pop(ctx.tool_use_id)) * 1000
    return ToolResult(f"{result.content}\n[{ctx.tool_name} took {elapsed:.0f} ms]", result.is_error)


SCRIPTED_CONVERSATION = [
    Reply(
        [
            text("Creating the files."),
            tool_use("Write", {"file_path": "data/a.txt", "content": "alpha\n"}),
            tool_use("Write", {"file_path": "data/b.txt", "content": "beta\n"}),
        ]
    ),
    Reply([tool_use("Bash", {"command": "rm -rf data"})]),
    Reply(
        [
            text("rm -rf is refused; removing the files one by one."),
            tool_use("Bash", {"command": "rm data/a.txt data/b.txt && rmdir data"}),
        ]
    ),
    Reply([tool_use("Write", {"file_path": "data/fresh.txt", "content": "fresh\n"})]),
    Reply([tool_use("Bash", {"command": "find . -type f | sort"})]),
    Reply([text("Done: data/ now holds only fresh.txt.")]),
]


def main() -> int:
    config = AgentConfig(
        agent_name="careful-cleaner",
        system_prompt="You are a careful shell user working in /workspace.",
        sandbox_config=SandboxConfig(limits=ResourceLimits(memory_mb=128, timeout_seconds=120)),
        max_turns=12,
        max_cost_usd=0.30,
        interceptors=[
            Interceptor("Bash", before=bash_auditor, name="bash-auditor"),
            Interceptor("Write", after=write_logger, name="write-logger"),
            Interceptor("*", before=start_timer, after=stop_timer, name="timer"),
        ],
    )
    with real_or_loopback(SCRIPTED_CONVERSATION) as client, SandboxManager() as manager:
        executor = SandboxedAgentExecutor(manager=manager, client=client)

        def show(event):
            if event.type in ("tool_call", "interceptor", "tool_result", "run_finished"):
                print(describe(event), flush=True)

        result = executor.execute(TASK, config, on_event=show)

    print()
    print(f"status: {result.status} ({result.end_reason}); output: {result.output}")
    if result.error:
        print(f"error: {result.error.type}: {result.error.message}")
    print(f"blocked tool calls: {result.stats.blocked_calls}")
    print("Bash audit log:")
    for line in audit_log:
        print(f"  {line}")
    print("files written (logged by write-logger):")
    for path, size in written:
        print(f"  {path} ({size} bytes)")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
