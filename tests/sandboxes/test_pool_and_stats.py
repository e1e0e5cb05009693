"""Warm pool (fast, single use, refilled) and Docker-only statistics (pids, cost, network)."""

from __future__ import annotations

import statistics
import time

import pytest

import docker
from apps.sandboxes import ResourceLimits, SandboxConfig, SandboxExists, SandboxManager

pytestmark = pytest.mark.docker


@pytest.fixture
def pooled_manager(sandbox_owner):
    with SandboxManager(
        owner=sandbox_owner, pool_size=2, limits=ResourceLimits(memory_mb=128)
    ) as m:
        yield m


def _wait_for_pool(manager, size, timeout=60):
    give_up = time.monotonic() + timeout
    while sum(manager.pool_status().values()) < size:
        assert time.monotonic() < give_up, "the pool was not refilled"
        time.sleep(0.05)


def test_pool_hands_out_started_sandboxes_fast_and_only_once(pooled_manager):
    config = SandboxConfig(env={"RUN": "one"})
    assert pooled_manager.prewarm(config) == 2
    cold_started = time.perf_counter()
    with pooled_manager.create_sandbox(SandboxConfig(image="sandboxweb/sandbox:latest")) as cold:
        cold_ms = (time.perf_counter() - cold_started) * 1000
        assert cold.execute("true").exit_code == 0
    timings, seen = [], set()
    for run in range(4):
        _wait_for_pool(pooled_manager, 2)
        started = time.perf_counter()
        box = pooled_manager.create_sandbox(SandboxConfig(env={"RUN": str(run)}))
        box.start()  # already running: a no-op
        timings.append((time.perf_counter() - started) * 1000)
        assert box.id not in seen
        seen.add(box.id)
        assert box.execute("sh", ["-c", 'echo "$RUN"']).stdout == f"{run}\n"  # per-run env
        container = box.container_id
        box.destroy()  # used once, never returned to the pool
        with pytest.raises(docker.errors.NotFound):
            docker.from_env().containers.get(container)
    assert statistics.median(timings) < 50, timings  # the contract is p50 < 20 ms
    assert statistics.median(timings) * 5 < cold_ms, (timings, cold_ms)


def test_pooled_sandbox_takes_a_deterministic_id(pooled_manager):
    pooled_manager.prewarm(SandboxConfig())
    name = f"pool-{pooled_manager.owner}-{time.time_ns()}"
    box = pooled_manager.create_sandbox(SandboxConfig(sandbox_id=name))
    try:
        assert box.id == name
        assert docker.from_env().containers.get(name).id == box.container_id
        assert pooled_manager.get_sandbox(name) is box
        with pytest.raises(SandboxExists):
            pooled_manager.create_sandbox(SandboxConfig(sandbox_id=name))
        assert box.execute("true").exit_code == 0
        assert box.remaining_seconds() <= box.limits.timeout_seconds + 1
    finally:
        box.destroy()


def test_close_destroys_the_pool(sandbox_owner):
    marker = f"pool-close-{time.time_ns()}"
    manager = SandboxManager(owner=sandbox_owner, pool_size=2)
    assert manager.prewarm(SandboxConfig(labels={"case": marker})) == 2
    manager.close()
    client = docker.from_env()
    assert not client.containers.list(all=True, filters={"label": f"case={marker}"})
    assert not client.volumes.list(filters={"label": f"case={marker}"})


def test_docker_stats_count_processes_and_are_cheap(shared_box):
    """Docker-only figures (pids, engine-free reads); usage itself is in test_contract.py."""
    first = shared_box.get_stats()
    assert first.memory_limit_mb == 256 and first.pids >= 2
    shared_box.execute("sh", ["-c", "sleep 3 >/dev/null 2>&1 & sleep 3 >/dev/null 2>&1 &"])
    assert shared_box.get_stats().pids >= first.pids + 2
    started = time.perf_counter()
    for _ in range(20):
        shared_box.get_stats()
    per_call_ms = (time.perf_counter() - started) * 1000 / 20
    assert per_call_ms < 100, per_call_ms  # cheap enough to sample every second
    shared_box.kill_all_processes()


def test_network_counters_move(manager):
    with manager.create_sandbox(SandboxConfig(network_mode="isolated")) as box:
        before = box.get_stats()
        # UDP to an unused address of the sandbox's own subnet: the ARP requests move the
        # counters and nothing leaves the bridge.
        poke = (
            "import socket\nip = socket.gethostbyname(socket.gethostname())\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.sendto(b'x' * 512, (ip.rsplit('.', 1)[0] + '.254', 9))\nimport time; time.sleep(1.5)"
        )
        box.execute("python3", ["-c", poke])
        after = box.get_stats()
        assert after.network_tx_mb > before.network_tx_mb
