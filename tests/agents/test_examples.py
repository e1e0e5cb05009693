"""Examples 3-5 run as a new user would run them: subprocesses, no API key, real Docker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK_NOTICE = "ANTHROPIC_API_KEY is not set, so this runs against the loopback"

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def run_example(name: str, owner: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    env["SANDBOX_OWNER"] = owner  # the session's leftover check covers the examples too
    completed = subprocess.run(
        [sys.executable, f"examples/{name}"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert LOOPBACK_NOTICE in output
    return output


def test_example_03_agent_with_capture(agent_sandbox_owner):
    output = run_example("03_agent_with_capture.py", agent_sandbox_owner)
    assert "status:     succeeded (end_turn), 3 turns" in output
    assert "0 1 1 2 3 5 8 13 21 34" in output
    assert re.search(r"captured 2 files:\n  fib\.js  177 bytes", output)
    assert "package.json  62 bytes" in output


def test_example_04_parallel_swarm(agent_sandbox_owner):
    output = run_example("04_parallel_swarm.py", agent_sandbox_owner)
    for name in ("backend-dev", "tester", "documenter"):
        assert re.search(rf"^{name} +succeeded", output, re.MULTILINE), output
    speedup = float(re.search(r"measured speedup: ([\d.]+)x with 3 separate", output).group(1))
    assert speedup > 1.5  # three 2-second jobs side by side, measured, not claimed


def test_example_05_custom_interceptors(agent_sandbox_owner):
    output = run_example("05_custom_interceptors.py", agent_sandbox_owner)
    assert "[interceptor] bash-auditor blocked Bash: `rm -rf` is not allowed" in output
    assert "blocked tool calls: 1" in output
    assert "/workspace/data/fresh.txt (6 bytes)" in output
    assert "status: succeeded (end_turn)" in output
