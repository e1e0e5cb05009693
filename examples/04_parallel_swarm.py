"""Example 4: three agents (backend-dev, tester, documenter) work at once, each in its own sandbox.

    uv run python examples/04_parallel_swarm.py

Prints each agent's result and the measured speed-up: the sum of the runs' durations divided by
the wall-clock time of the whole batch. With ANTHROPIC_API_KEY set the real model works; without
it the loopback Messages API server (tests/support/anthropic_server.py) replays one scripted
conversation per agent (chosen by system prompt), and every tool call still runs in a real
Docker sandbox.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apps.agents import AgentConfig, SandboxedAgentExecutor
from apps.sandboxes import ResourceLimits, SandboxConfig, SandboxManager
from tests.support.anthropic_server import (
    Reply,
    real_or_loopback,
    route,
    text,
    tool_use,
)

AGENTS = {
    "backend-dev": {
        "task": "Write server.py: a function add(a, b) and a __main__ that prints add(2, 3).",
        "prompt": "You are backend-dev, a Python backend developer.",
        "limits": ResourceLimits(memory_mb=384, cpu_cores=0.5, timeout_seconds=180),
        "patterns": ["**/*.py"],
    },
    "tester": {
        "task": "Write test_math.py with a few assert-based checks of integer addition; run it.",
        "prompt": "You are tester, who writes small, fast tests.",
        "limits": ResourceLimits(memory_mb=256, cpu_cores=0.5, timeout_seconds=120),
        "patterns": ["test_*.py"],
    },
    "documenter": {
        "task": "Write README.md describing a tiny adder service in three sentences.",
        "prompt": "You are documenter, a concise technical writer.",
        "limits": ResourceLimits(memory_mb=128, cpu_cores=0.25, timeout_seconds=90),
        "patterns": ["**/*.md"],
    },
}

SERVER_PY = (
    "def add(a, b):\n    return a + b\n\n\nif __name__ == '__main__':\n    print(add(2, 3))\n"
)
TEST_MATH_PY = "assert 1 + 1 == 2\nassert -1 + 1 == 0\nprint('checks passed')\n"
README_MD = "# Adder\n\nThe adder service adds two integers: call add(a, b). It has tests.\n"


def scripted(file_path: str, content: str, command: str, answer: str) -> list[Reply]:
    return [
        Reply([tool_use("Write", {"file_path": file_path, "content": content})]),
        # `sleep` stands in for the minutes real work takes, so the overlap is visible
        Reply([tool_use("Bash", {"command": f"sleep 2 && {command}"})]),
        Reply([text(answer)]),
    ]


# One scripted conversation per agent for the loopback server, picked by the system prompt.
SCRIPTS = {
    AGENTS["backend-dev"]["prompt"]: scripted(
        "server.py", SERVER_PY, "python3 server.py", "server.py prints 5."
    ),
    AGENTS["tester"]["prompt"]: scripted(
        "test_math.py", TEST_MATH_PY, "python3 test_math.py", "All checks pass."
    ),
    AGENTS["documenter"]["prompt"]: scripted(
        "README.md", README_MD, "wc -w README.md", "README.md written."
    ),
}


def main() -> int:
    tasks = [
        (
            spec["task"],
            AgentConfig(
                agent_name=name,
                system_prompt=spec["prompt"],
                sandbox_config=SandboxConfig(limits=spec["limits"], network_mode="none"),
                max_turns=12,
                max_cost_usd=0.30,
                capture_files=True,
                capture_patterns=spec["patterns"],
            ),
        )
        for name, spec in AGENTS.items()
    ]
    names = list(AGENTS)
    print_lock = threading.Lock()

    def show(index: int, event) -> None:
        if event.type in ("tool_call", "run_finished", "status"):
            detail = getattr(event, "tool", None) or getattr(event, "status", "")
            with print_lock:
                print(f"  {names[index]:<11} {event.type:<13} {detail}", flush=True)

    script = route(lambda request: request.system_text, SCRIPTS)
    with real_or_loopback(script) as client, SandboxManager() as manager:
        executor = SandboxedAgentExecutor(manager=manager, client=client)
        started = time.monotonic()
        results = executor.execute_parallel(tasks, max_concurrency=3, on_event=show)
        wall = time.monotonic() - started

    print()
    total = 0.0
    for name, result in zip(names, results, strict=True):
        total += result.duration_ms / 1000
        files = ", ".join(f"{f.path} ({f.size} B)" for f in result.files) or "none"
        print(f"{name:<11} {result.status:<9} {result.duration_ms / 1000:5.2f} s  files: {files}")
        if result.error:
            print(f"{'':<11} error: {result.error.type}: {result.error.message}")
        print(f"{'':<11} output: {result.output}")
    sandboxes = {r.sandbox_id for r in results}
    print()
    print(f"sum of run durations: {total:.2f} s; wall time: {wall:.2f} s")
    print(f"measured speedup: {total / wall:.2f}x with {len(sandboxes)} separate sandboxes")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
