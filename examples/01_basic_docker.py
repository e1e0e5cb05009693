"""Example 1 - basic Docker execution (port of the seed's example 1).

A hardened sandbox (256 MB, 0.5 CPU, 60 s, no network) gets a script written into its
workspace, runs it with node, prints what it printed and the sandbox's resource statistics, and
is destroyed. Exits non-zero if anything did not happen as expected.

    uv run python examples/01_basic_docker.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clean checkout

from apps.sandboxes import (
    ResourceLimits,
    SandboxConfig,
    SandboxError,
    SandboxManager,
)

HELLO_JS = """\
const os = require("os");
console.log("Hello from the sandbox!");
console.log(`node ${process.version}, uid ${process.getuid()}, cwd ${process.cwd()}`);
let sum = 0;
for (let i = 1; i <= 1000000; i++) sum += i;
console.log(`sum(1..1e6) = ${sum}`);
"""


def main() -> int:
    config = SandboxConfig(
        limits=ResourceLimits(memory_mb=256, cpu_cores=0.5, timeout_seconds=60),
        network_mode="none",
    )
    with SandboxManager(owner="example-01") as manager:
        try:
            sandbox = manager.create_sandbox(config)
        except SandboxError as exc:
            print(f"Could not create the sandbox: {exc}", file=sys.stderr)
            return 2
        with sandbox:
            print(f"Sandbox {sandbox.id} is {sandbox.state.value} ({sandbox.provider})")
            sandbox.write_file("/workspace/hello.js", HELLO_JS)
            print("Files:", [f"{f.name} ({f.size} B)" for f in sandbox.list_files()])
            result = sandbox.execute("node", ["hello.js"], timeout=30)
            print(f"node exited {result.exit_code} after {result.duration_ms:.0f} ms:")
            print(result.stdout, end="")
            if result.stderr:
                print("stderr:", result.stderr, end="")
            stats = sandbox.get_stats()
            print(
                f"Stats: memory {stats.memory_usage_mb:.1f}/{stats.memory_limit_mb:.0f} MB, "
                f"cpu {stats.cpu_percent:.1f} %, disk {stats.disk_usage_mb:.2f} MB, "
                f"pids {stats.pids}, network rx/tx {stats.network_rx_mb}/{stats.network_tx_mb} MB"
            )
        print(f"Sandbox destroyed ({sandbox.state.value}).")
    ok = (
        result.exit_code == 0
        and "Hello from the sandbox!" in result.stdout
        and "uid 1000" in result.stdout
        and "sum(1..1e6) = 500000500000" in result.stdout
        and stats.memory_limit_mb == 256
    )
    print("OK" if ok else "UNEXPECTED RESULT")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
