"""Example 6 - resource limits (port of the seed's example 6).

A sandbox with strict limits (64 MB, 0.1 CPU, 15 s wall clock) runs a node memory hog, which the
kernel OOM-kills (reported as ``oom``), then ``sleep 30``, which cannot finish inside the 15 s
sandbox lifetime and is killed (``timed_out=True``, exit 124, sandbox ``end_reason="timeout"``).
(The seed used 10 s; node needs a few seconds just to start at 0.1 CPU on a busy host, so the
hog gets some headroom to reach its memory limit before the clock does.)
The seed printed ``timed_out: false`` here; this one exits non-zero unless both limits really
fired.

    uv run python examples/06_resource_limits.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clean checkout

from apps.sandboxes import (
    ResourceLimits,
    SandboxConfig,
    SandboxError,
    SandboxManager,
)

MEMORY_HOG = """
const chunks = [];
for (let i = 0; ; i++) {
  chunks.push(Buffer.alloc(8 * 1024 * 1024, 1));
  if (i % 2 === 0) console.log(`allocated ${(i + 1) * 8} MB`);
}
"""


def main() -> int:
    limits = ResourceLimits(memory_mb=64, cpu_cores=0.1, timeout_seconds=15)
    with SandboxManager(owner="example-06") as manager:
        try:
            sandbox = manager.create_sandbox(SandboxConfig(limits=limits))
        except SandboxError as exc:
            print(f"Could not create the sandbox: {exc}", file=sys.stderr)
            return 2
        with sandbox:
            print(
                f"Sandbox {sandbox.id}: {limits.memory_mb} MB, {limits.cpu_cores} CPU, "
                f"{limits.timeout_seconds} s"
            )
            print("1) memory hog (node) ...")
            hog = sandbox.execute("node", ["-e", MEMORY_HOG])
            last = (hog.stdout.strip().splitlines() or ["nothing"])[-1]
            print(
                f"   exit {hog.exit_code}, oom_killed={hog.oom_killed}, "
                f"end_reason={hog.end_reason}, last output: {last}"
            )
            print("2) sleep 30 ...")
            started = time.monotonic()
            sleeper = sandbox.execute("sleep", ["30"])
            print(
                f"   exit {sleeper.exit_code}, timed_out={sleeper.timed_out} after "
                f"{time.monotonic() - started:.1f} s; sandbox end_reason={sandbox.end_reason}"
            )
    ok = (
        hog.oom_killed
        and hog.end_reason == "oom"
        and sleeper.timed_out
        and sleeper.exit_code == 124
        and sandbox.end_reason == "timeout"
    )
    print("OK: both limits were enforced" if ok else "UNEXPECTED RESULT: a limit did not fire")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
