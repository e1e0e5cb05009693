"""Limits are enforced by the kernel and reported: memory, CPU, processes, disk, /tmp, bandwidth."""

from __future__ import annotations

import subprocess
import time

import pytest

from apps.sandboxes import (
    DiskLimitExceeded,
    DockerOptions,
    ResourceLimits,
    SandboxConfig,
    SandboxState,
)

pytestmark = pytest.mark.docker

MEMORY_HOG = "x = []\nwhile True:\n    x.append(bytearray(8 * 2**20))\n"
PY_FORK_BOMB = (
    "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
)


def test_memory_hog_is_oom_killed_and_reported_as_oom(manager):
    with manager.create_sandbox(SandboxConfig(limits=ResourceLimits(memory_mb=64))) as box:
        result = box.execute("python3", ["-c", MEMORY_HOG], timeout=60)
        assert result.exit_code == 137
        assert result.oom_killed and result.end_reason == "oom"
        assert box.oom_kills >= 1
        # The kernel killed the hog, not the sandbox: it still works.
        assert box.state is SandboxState.RUNNING
        assert box.execute("echo", ["alive"]).stdout == "alive\n"
        # A plain SIGKILL is not mistaken for OOM.
        killed = box.execute("sh", ["-c", "kill -9 $$"])
        assert killed.exit_code == 137 and not killed.oom_killed and killed.end_reason is None


def test_memory_limit_has_no_swap_escape(manager):
    with manager.create_sandbox(SandboxConfig(limits=ResourceLimits(memory_mb=48))) as box:
        limits = box.execute(
            "cat",
            [
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes",
            ],
        )
        values = limits.stdout.split()
        assert values[0] == str(48 * 2**20)
        if len(values) > 1:  # swap accounting on: memory+swap must equal memory
            assert values[1] == values[0]


def _settles(box, *, pids: int, within: float = 5.0) -> bool:
    give_up = time.monotonic() + within
    while box.get_stats().pids > pids:
        if time.monotonic() > give_up:
            return False
        time.sleep(0.1)
    return True


def test_fork_bomb_is_contained_and_the_sandbox_recovers(manager):
    limits = ResourceLimits(max_processes=48, cpu_cores=0.5)
    with manager.create_sandbox(SandboxConfig(limits=limits)) as box:
        host_started = time.monotonic()
        result = box.execute("python3", ["-c", PY_FORK_BOMB], timeout=4)
        assert result.timed_out and result.exit_code == 124
        # The host stayed responsive while the bomb ran (generous: a shared 2-core box).
        assert subprocess.run(["true"], check=True, timeout=10).returncode == 0
        assert time.monotonic() - host_started < 30
        assert box.execute("echo", ["after the bomb"]).stdout == "after the bomb\n"
        assert _settles(box, pids=3)

        # The classic shell bomb detaches itself and keeps the pids limit saturated.
        box.execute("bash", ["-c", ":(){ :|:& };:"], timeout=3)
        time.sleep(0.5)
        assert box.get_stats().pids >= 40, "the bomb should be pinned at the pids limit"
        assert box.kill_all_processes() > 0
        assert _settles(box, pids=3), "killed processes are reaped by init"
        assert box.execute("echo", ["recovered"]).stdout == "recovered\n"


def test_cpu_is_throttled_to_the_limit(manager):
    with manager.create_sandbox(SandboxConfig(limits=ResourceLimits(cpu_cores=0.5))) as box:
        box.get_stats()
        started = time.monotonic()
        box.execute(
            "sh",
            ["-c", "timeout 2 sh -c 'while :; do :; done' & timeout 2 sh -c 'while :; do :; done'"],
        )
        stats = box.get_stats()
        assert time.monotonic() - started >= 1.9
        # Two busy loops would use up to 200 % unthrottled; the quota holds them near 50 %.
        assert 5 < stats.cpu_percent < 75, stats


def test_workspace_disk_limit_gives_enospc(manager):
    with manager.create_sandbox(SandboxConfig(limits=ResourceLimits(disk_mb=24))) as box:
        fill = box.execute(
            "sh", ["-c", "head -c 64000000 /dev/zero > fill; echo rc=$?; du -k fill"]
        )
        assert "No space left on device" in fill.stderr and "rc=1" in fill.stdout
        assert int(fill.stdout.split()[-2]) < 24 * 1024
        with pytest.raises(DiskLimitExceeded, match="disk limit 24 MB"):
            box.write_file("more.bin", b"z" * (4 * 1024 * 1024))
        stats = box.get_stats()
        assert stats.disk_limit_mb is not None and stats.disk_limit_mb <= 24
        assert stats.disk_usage_mb > 0.8 * stats.disk_limit_mb
        box.delete_file("fill")
        box.write_file("after.txt", "space again")
        assert box.read_file("after.txt") == b"space again"


def test_tmpfs_workspace_backend_is_also_kernel_enforced(manager):
    config = SandboxConfig(
        limits=ResourceLimits(disk_mb=16, memory_mb=128),
        docker=DockerOptions(disk_backend="tmpfs"),
    )
    with manager.create_sandbox(config) as box:
        assert box.disk_path is None
        fill = box.execute("sh", ["-c", "head -c 40000000 /dev/zero > fill"])
        assert fill.exit_code != 0 and "No space left" in fill.stderr
        assert box.execute("stat", ["-c", "%u", "."]).stdout.strip() == "1000"


def test_tmp_and_root_filesystem(shared_box):
    result = shared_box.execute("sh", ["-c", "head -c 200000000 /dev/zero > /tmp/fill"])
    assert "No space left" in result.stderr  # /tmp is a 64 MB tmpfs
    shared_box.execute("rm", ["-f", "/tmp/fill"])
    for path in ("/etc/x", "/usr/bin/x", "/home/agent/x"):
        denied = shared_box.execute("touch", [path])
        assert denied.exit_code != 0 and "Read-only file system" in denied.stderr
    noexec = shared_box.execute("sh", ["-c", "cp /bin/true /tmp/t && /tmp/t"])
    assert noexec.exit_code != 0


def test_file_size_and_open_file_ulimits(shared_box):
    limits = shared_box.execute("sh", ["-c", "ulimit -n; ulimit -f; ulimit -c"]).stdout.split()
    assert limits[0] == "1024"
    assert limits[1] != "unlimited" and limits[2] == "0"


def test_network_bandwidth_is_shaped(manager):
    group = SandboxConfig(network_mode="isolated", network_group=f"bw-{time.time_ns()}")
    server = manager.create_sandbox(group)
    limited = manager.create_sandbox(group.replace(limits=ResourceLimits(network_mbps=8)))
    free = manager.create_sandbox(group)
    listen = (
        "import socket\ns = socket.socket()\ns.bind(('0.0.0.0', 9000))\ns.listen(8)\n"
        "while True:\n    c, _ = s.accept()\n"
        "    while c.recv(65536):\n        pass\n    c.close()\n"
    )
    send = (
        "import socket, sys, time\nt = time.time()\n"
        "c = socket.create_connection((sys.argv[1], 9000))\nc.sendall(b'x' * 1500000)\n"
        "c.shutdown(socket.SHUT_WR)\nc.recv(1)\nprint(time.time() - t)\n"
    )
    try:
        server.execute("sh", ["-c", 'python3 -c "$0" >/dev/null 2>&1 &', listen])
        time.sleep(0.5)
        slow = float(limited.execute("python3", ["-c", send, server.id]).stdout)
        fast = float(free.execute("python3", ["-c", send, server.id]).stdout)
        # 1.5 MB at 8 Mbit/s is 1.5 s; unshaped it is milliseconds.
        assert slow > 1.0, slow
        assert slow > 5 * fast, (slow, fast)
    finally:
        for box in (limited, free, server):
            box.destroy()


def test_remote_engine_fallbacks(manager, monkeypatch):
    """Without host access (a remote DOCKER_HOST) the same guarantees hold through the API:
    a tmpfs workspace, the in-sandbox killer, OOM from the cgroup file, stats from the Engine."""
    from apps.sandboxes import UnsupportedLimit
    from apps.sandboxes.docker import DockerProvider

    monkeypatch.setattr(DockerProvider, "is_local", lambda self, options=None: False)
    with pytest.raises(UnsupportedLimit, match="network_mbps"):
        manager.create_sandbox(
            SandboxConfig(network_mode="bridge", limits=ResourceLimits(network_mbps=5))
        )
    config = SandboxConfig(limits=ResourceLimits(memory_mb=64, disk_mb=16))
    with manager.create_sandbox(config) as box:
        assert box.disk_path is None  # tmpfs-backed workspace
        result = box.execute(
            "sh", ["-c", "sleep 60 & (setsid sleep 61 >/dev/null 2>&1 &); wait"], timeout=1
        )
        assert result.timed_out and result.exit_code == 124
        assert "sleep 6" not in box.execute("ps", ["-eo", "args"]).stdout
        hog = box.execute("python3", ["-c", MEMORY_HOG], timeout=60)
        assert hog.oom_killed and hog.end_reason == "oom"
        box.write_file("f.bin", b"x" * 2_000_000)
        stats = box.get_stats()
        assert stats.memory_limit_mb == 64 and stats.pids >= 2
        assert stats.disk_usage_mb >= 1.5 and stats.disk_limit_mb and stats.disk_limit_mb <= 16
