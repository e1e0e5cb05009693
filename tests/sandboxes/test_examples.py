"""The ported examples run from a clean checkout and exit 0 only if they did what they claim."""

from __future__ import annotations

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
