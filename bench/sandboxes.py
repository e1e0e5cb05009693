"""Benchmark of the sandbox layer against raw docker-py, measured in the same run.

    uv run python bench/sandboxes.py [--rounds 15] [--json results.json]

Reports medians (and p95 where it matters) and the ratio to the raw floor:
* cold create+start of a sandbox vs ``client.containers.run`` of the same image (the floor), and
  vs ``containers.run`` with the same hardening flags plus a named volume;
* warm-pool acquire (``create_sandbox`` + ``start`` with ``pool_size > 0``) p50/p95;
* ``execute("true")`` vs ``container.exec_run(["true"])`` (interleaved, same container);
* ``get_stats()`` vs the Engine's ``stats(stream=False)``;
* ``write_file``/``read_file`` of 10 MB and 100 MB, in MB/s.

Raw and sandbox measurements are interleaved so a busy shared host penalises both alike.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from docker.types import Mount

import docker
from apps.sandboxes import DEFAULT_DOCKER_IMAGE, SandboxConfig, SandboxManager

LABEL = {"org.sandboxweb.bench": "1"}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def bench_cold(client, manager, rounds: int) -> dict:
    plain, hardened, ours = [], [], []
    for i in range(rounds):
        started = time.perf_counter()
        container = client.containers.run(DEFAULT_DOCKER_IMAGE, detach=True, labels=LABEL)
        plain.append(time.perf_counter() - started)
        container.remove(force=True)

        volume = client.volumes.create(f"bench-{os.getpid()}-{i}", labels=LABEL)
        started = time.perf_counter()
        container = client.containers.run(
            DEFAULT_DOCKER_IMAGE,
            detach=True,
            labels=LABEL,
            user="1000:1000",
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            network_mode="none",
            init=True,
            mem_limit=512 * 2**20,
            memswap_limit=512 * 2**20,
            nano_cpus=10**9,
            pids_limit=256,
            tmpfs={"/tmp": "rw,nosuid,nodev,noexec,size=64m"},  # noqa: S108
            mounts=[Mount("/workspace", volume.name, type="volume")],
        )
        hardened.append(time.perf_counter() - started)
        container.remove(force=True)
        volume.remove()

        started = time.perf_counter()
        box = manager.create_sandbox(SandboxConfig())
        ours.append(time.perf_counter() - started)
        box.destroy()
    floor = statistics.median(plain)
    return {
        "raw_run_plain_ms": ms(floor),
        "raw_run_hardened_ms": ms(statistics.median(hardened)),
        "sandbox_cold_ms": ms(statistics.median(ours)),
        "sandbox_cold_p95_ms": ms(pct(ours, 0.95)),
        "ratio_vs_plain": round(statistics.median(ours) / floor, 3),
        "ratio_vs_hardened": round(statistics.median(ours) / statistics.median(hardened), 3),
    }


def bench_pool(owner: str, rounds: int) -> dict:
    timings = []
    with SandboxManager(owner=owner, pool_size=2) as manager:
        manager.prewarm(SandboxConfig())
        for _ in range(rounds):
            give_up = time.monotonic() + 60
            while sum(manager.pool_status().values()) < 2 and time.monotonic() < give_up:
                time.sleep(0.02)
            started = time.perf_counter()
            box = manager.create_sandbox(SandboxConfig())
            box.start()
            timings.append(time.perf_counter() - started)
            box.destroy()
    return {
        "pool_acquire_p50_ms": ms(statistics.median(timings)),
        "pool_acquire_p95_ms": ms(pct(timings, 0.95)),
    }


def bench_exec(client, box, rounds: int) -> dict:
    container = client.containers.get(box.container_id)
    raw, ours = [], []
    for _ in range(3):  # warm both paths
        container.exec_run(["true"])
        box.execute("true")
    for _ in range(rounds):
        started = time.perf_counter()
        container.exec_run(["true"], user="1000:1000")
        raw.append(time.perf_counter() - started)
        started = time.perf_counter()
        box.execute("true")
        ours.append(time.perf_counter() - started)
    return {
        "raw_exec_run_ms": ms(statistics.median(raw)),
        "sandbox_execute_ms": ms(statistics.median(ours)),
        "sandbox_execute_p95_ms": ms(pct(ours, 0.95)),
        "ratio": round(statistics.median(ours) / statistics.median(raw), 3),
    }


def bench_stats(client, box, rounds: int) -> dict:
    ours = []
    for _ in range(rounds):
        started = time.perf_counter()
        box.get_stats()
        ours.append(time.perf_counter() - started)
    engine = []
    for _ in range(3):
        started = time.perf_counter()
        client.api.stats(box.container_id, stream=False)
        engine.append(time.perf_counter() - started)
    return {
        "sandbox_get_stats_ms": ms(statistics.median(ours)),
        "engine_stats_ms": ms(statistics.median(engine)),
    }


def bench_files(box, sizes_mb: list[int]) -> dict:
    results = {}
    for size_mb in sizes_mb:
        data = os.urandom(size_mb * 2**20)
        digest = hashlib.sha256(data).hexdigest()
        started = time.perf_counter()
        box.write_file(f"bench-{size_mb}.bin", data)
        write_s = time.perf_counter() - started
        started = time.perf_counter()
        back = box.read_file(f"bench-{size_mb}.bin")
        read_s = time.perf_counter() - started
        assert hashlib.sha256(back).hexdigest() == digest, "round trip corrupted the file"
        del back
        box.delete_file(f"bench-{size_mb}.bin")
        results[f"write_{size_mb}mb_mbps"] = round(size_mb / write_s, 1)
        results[f"read_{size_mb}mb_mbps"] = round(size_mb / read_s, 1)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    owner = f"bench-{os.getpid()}"
    client = docker.from_env()
    report: dict = {"rounds": args.rounds, "cpus": os.cpu_count()}
    print(f"sandbox benchmark, {args.rounds} rounds, image {DEFAULT_DOCKER_IMAGE}", flush=True)
    try:
        with SandboxManager(owner=owner) as manager:
            manager.create_sandbox(SandboxConfig()).destroy()  # connect, warm caches
            report["cold_start"] = bench_cold(client, manager, args.rounds)
            print("cold start:", report["cold_start"], flush=True)
            report["warm_pool"] = bench_pool(owner, args.rounds)
            print("warm pool:", report["warm_pool"], flush=True)
            with manager.create_sandbox(SandboxConfig()) as box:
                report["exec_true"] = bench_exec(client, box, args.rounds * 2)
                print("execute('true'):", report["exec_true"], flush=True)
                report["stats"] = bench_stats(client, box, args.rounds)
                print("stats:", report["stats"], flush=True)
                report["files"] = bench_files(box, [10, 100])
                print("files:", report["files"], flush=True)
            manager.reap_orphans(is_live=lambda labels: False, grace_seconds=0)
    finally:
        for container in client.containers.list(
            all=True, filters={"label": "org.sandboxweb.bench=1"}
        ):
            container.remove(force=True)
        client.close()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
