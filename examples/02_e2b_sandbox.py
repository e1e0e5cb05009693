"""Example 2 - an E2B sandbox with a Python template (port of the seed's example 2).

A sandbox made from an E2B template gets a small data set and an analysis script written into
its workspace, runs the script with python3, reads the report it wrote, and is destroyed. Exits
non-zero if the expected results did not appear.

    uv run python examples/02_e2b_sandbox.py

With E2B_API_KEY set this runs on the real E2B cloud (template $E2B_TEMPLATE, default "base",
which ships python3). Without it, it starts the loopback E2B server (tests/support/e2b_server.py)
in-process and the real e2b SDK talks to that; each sandbox is then a hardened Docker container,
so the Docker Engine and the sandbox image are needed (`make test` or
`uv run python manage.py bootstrap` prepares both). It prints which one it used.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clean checkout

from apps.sandboxes import ResourceLimits, SandboxConfig, SandboxError, SandboxManager
from tests.support.e2b_server import real_or_loopback

DATA_CSV = """\
city,month,temperature
Oslo,1,-4.3
Oslo,4,4.5
Oslo,7,16.4
Oslo,10,6.3
Lisbon,1,11.6
Lisbon,4,15.1
Lisbon,7,23.1
Lisbon,10,19.3
Cairo,1,14.0
Cairo,4,22.1
Cairo,7,28.0
Cairo,10,24.3
"""

ANALYZE_PY = """\
import csv, json, statistics, sys

with open("data.csv", newline="") as fh:
    rows = list(csv.DictReader(fh))
by_city = {}
for row in rows:
    by_city.setdefault(row["city"], []).append(float(row["temperature"]))
report = {
    city: {
        "mean": round(statistics.mean(values), 2),
        "range": round(max(values) - min(values), 2),
    }
    for city, values in sorted(by_city.items())
}
print(f"python {sys.version.split()[0]}: analysed {len(rows)} rows, {len(report)} cities")
for city, figures in report.items():
    print(f"{city:8} mean {figures['mean']:6.2f} C  range {figures['range']:5.2f} C")
warmest = max(report, key=lambda city: report[city]["mean"])
print(f"warmest on average: {warmest}")
with open("report.json", "w") as fh:
    json.dump(report, fh, indent=2)
"""

EXPECTED = {
    "Cairo": {"mean": 22.1, "range": 14.0},
    "Lisbon": {"mean": 17.27, "range": 11.5},
    "Oslo": {"mean": 5.72, "range": 20.7},
}


def main() -> int:
    owner = os.environ.get("SANDBOX_OWNER") or "example-02"
    with real_or_loopback(owner=owner) as options:
        config = SandboxConfig(
            provider="e2b",
            limits=ResourceLimits(timeout_seconds=120),  # E2B ends the sandbox at the deadline
            network_mode="none",
            e2b=dataclasses.replace(options, template=os.environ.get("E2B_TEMPLATE", "base")),
        )
        with SandboxManager(owner=owner) as manager:
            try:
                sandbox = manager.create_sandbox(config)
            except SandboxError as exc:
                print(f"Could not create the sandbox: {exc}", file=sys.stderr)
                return 2
            with sandbox:
                print(
                    f"Sandbox {sandbox.id} is {sandbox.state.value} ({sandbox.provider}, "
                    f"E2B id {sandbox.e2b_id}, template {config.e2b.template!r})"
                )
                sandbox.write_file("/workspace/data.csv", DATA_CSV)
                sandbox.write_file("/workspace/analyze.py", ANALYZE_PY)
                print("Files:", [f"{f.name} ({f.size} B)" for f in sandbox.list_files()])
                result = sandbox.execute(
                    "python3",
                    ["analyze.py"],
                    timeout=60,
                    on_output=lambda stream, data: print(data.decode(), end=""),
                )
                print(f"python3 exited {result.exit_code} after {result.duration_ms:.0f} ms")
                if result.stderr:
                    print("stderr:", result.stderr, end="")
                report = json.loads(sandbox.read_file("report.json"))
                stats = sandbox.get_stats()
                print(
                    f"Stats: memory {stats.memory_usage_mb:.1f}/{stats.memory_limit_mb:.0f} MB, "
                    f"cpu {stats.cpu_percent:.1f} %, disk {stats.disk_usage_mb:.1f} MB"
                )
            print(f"Sandbox destroyed ({sandbox.state.value}).")
    ok = (
        result.exit_code == 0
        and "analysed 12 rows, 3 cities" in result.stdout
        and "warmest on average: Cairo" in result.stdout
        and report == EXPECTED
    )
    print("OK" if ok else "UNEXPECTED RESULT")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
