"""The ported examples run from a clean checkout and exit 0 only if they did what they claim."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.docker


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("01_basic_docker.py", ["Hello from the sandbox!", "Stats: memory", "OK"]),
        ("06_resource_limits.py", ["oom_killed=True", "timed_out=True", "OK: both limits"]),
    ],
)
def test_example_runs(script, expected, sandbox_owner):
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / script)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for text in expected:
        assert text in done.stdout, done.stdout


def test_example_02_runs_on_the_loopback_e2b_server_without_a_key(sandbox_owner):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("E2B_")}
    environment["SANDBOX_OWNER"] = sandbox_owner  # its containers fall under the leak check
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "02_e2b_sandbox.py")],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "loopback E2B server" in done.stdout.splitlines()[0]
    for text in ("(e2b, E2B id", "analysed 12 rows, 3 cities", "warmest on average: Cairo", "OK"):
        assert text in done.stdout, done.stdout
