"""Example 3: one Claude agent builds a small Node.js program in a sandbox; its files come back.

    uv run python examples/03_agent_with_capture.py

With ANTHROPIC_API_KEY set, the real model does the task. Without it, the loopback Messages API
server (tests/support/anthropic_server.py) replays a scripted conversation, so the example
still runs every tool call in a real Docker sandbox. Needs the Docker Engine and the sandbox
image (`make test` or `uv run python manage.py bootstrap` prepares both).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apps.agents import AgentConfig, SandboxedAgentExecutor, describe
from apps.sandboxes import ResourceLimits, SandboxConfig, SandboxManager
from tests.support.anthropic_server import Reply, real_or_loopback, text, tool_use

TASK = (
    "Create a simple Node.js application that calculates fibonacci numbers: fib.js printing "
    "the first N numbers (N from the command line), a package.json, then run it with N=10."
)

FIB_JS = """\
const n = Number(process.argv[2] || 10);
const seq = [0, 1];
while (seq.length < n) seq.push(seq[seq.length - 1] + seq[seq.length - 2]);
console.log(seq.slice(0, n).join(' '));
"""
PACKAGE_JSON = '{\n  "name": "fib",\n  "version": "1.0.0",\n  "main": "fib.js"\n}\n'

# What the loopback server answers, turn by turn, when no API key is set.
SCRIPTED_CONVERSATION = [
    Reply(
        [
            text("I'll write the program and its package.json."),
            tool_use("Write", {"file_path": "fib.js", "content": FIB_JS}),
            tool_use("Write", {"file_path": "/workspace/package.json", "content": PACKAGE_JSON}),
        ],
        usage={"input_tokens": 2400, "output_tokens": 310, "cache_creation_input_tokens": 1900},
    ),
    Reply(
        [tool_use("Bash", {"command": "node fib.js 10"})],
        usage={"input_tokens": 180, "output_tokens": 40, "cache_read_input_tokens": 1900},
    ),
    Reply(
        [text("Done: `node fib.js 10` prints 0 1 1 2 3 5 8 13 21 34.")],
        usage={"input_tokens": 90, "output_tokens": 30, "cache_read_input_tokens": 2100},
    ),
]


def main() -> int:
    config = AgentConfig(
        agent_name="node-fib",
        system_prompt="You are a careful Node.js developer. Work in /workspace.",
        sandbox_config=SandboxConfig(
            limits=ResourceLimits(memory_mb=256, cpu_cores=0.5, timeout_seconds=120),
            network_mode="none",
        ),
        max_turns=15,
        max_cost_usd=0.50,
        capture_files=True,
        capture_patterns=["**/*.js", "**/*.json"],
    )
    with real_or_loopback(SCRIPTED_CONVERSATION) as client, SandboxManager() as manager:
        executor = SandboxedAgentExecutor(manager=manager, client=client)

        def show(event):
            if event.type != "text_delta":  # the whole message is shown once it is complete
                print(describe(event), flush=True)

        result = executor.execute(TASK, config, on_event=show)

    print()
    print(f"status:     {result.status} ({result.end_reason}), {result.turns} turns")
    if result.error:
        print(f"error:      {result.error.type}: {result.error.message}")
    print(f"output:     {result.output}")
    print(
        f"usage:      {result.usage.input_tokens} in / {result.usage.output_tokens} out / "
        f"{result.usage.cache_read_tokens} cache read tokens, ${result.usage.cost_usd:.4f}"
    )
    print(f"duration:   {result.duration_ms:.0f} ms in sandbox {result.sandbox_id}")
    print(
        f"stats:      {result.stats.tool_calls} tool calls, {result.stats.commands_executed} "
        f"commands, {result.stats.files_created} files created"
    )
    print(f"captured {len(result.files)} files:")
    for captured in result.files:
        print(f"  {captured.path}  {captured.size} bytes  sha256 {captured.sha256[:16]}…")
        for line in captured.content.decode("utf-8", "replace").splitlines():
            print(f"    | {line}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
