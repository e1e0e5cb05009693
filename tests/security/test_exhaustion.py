"""Resource-exhaustion attacks (reference §2.2, 1-12) as users' runs on a real worker and engine.

Every run goes project -> ``services.start_run`` -> the Celery worker -> a Docker sandbox; the
``attacks`` fixture then checks each run ended, its sandbox passed the conformance check before
the first command, and its container and volume are gone. Runs of one test are launched together
so the worker (4 processes) runs them side by side.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

import docker
from apps.runs import services
from apps.runs.models import Run, RunEvent
from apps.runs.selectors import log_lines
from tests.security.conftest import py

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker]
S = Run.Status
MB = 1024 * 1024


def text_of(run: Run, last: int = 10**6) -> list[str]:
    return [line.text for line in log_lines(run=run, first=1, last=last)]


def wait_for_line(run: Run, needle: str, timeout: float = 60) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.status == S.RUNNING and any(needle in line for line in text_of(run, 50)):
            return run
        assert not run.is_terminal, (run.status, run.error_message, text_of(run, 50))
        time.sleep(0.2)
    raise AssertionError(f"run {run.pk} never printed {needle!r}")


def pids_in_cgroup(container_id: str) -> list[int]:
    """Host processes in the container's cgroups (from the host's /proc, not from Docker)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*/cgroup"):
        try:
            if container_id in entry.read_text():
                found.append(int(entry.parent.name))
        except OSError:
            continue  # exited meanwhile
    return found


def peak_pids(container_id: str, seconds: float) -> int:
    """The highest pids.current of the container's cgroup seen within ``seconds``."""
    files = list(Path("/sys/fs/cgroup").glob(f"pids/**/{container_id}/pids.current")) or list(
        Path("/sys/fs/cgroup").glob(f"**/{container_id}/pids.current")
    )
    peak = 0
    give_up = time.monotonic() + seconds
    while files and time.monotonic() < give_up and peak < 256:
        try:
            peak = max(peak, int(files[0].read_text()))
        except OSError:
            break  # the container is gone
        time.sleep(0.05)
    return peak


# -- processes: fork bomb, thread bomb, zombie factory --------------------------------------------

THREAD_BOMB = """
import threading, time
count = 0
try:
    while True:
        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
        count += 1
except RuntimeError as exc:
    print(f"threads capped at {count}: {exc}", flush=True)
"""
# Each round forks 200 children that exit at once and are never waited for by their parent;
# when the parent exits they pass to init. Three rounds need 600 pids: more than the limit
# (256) unless init reaps them.
ZOMBIES = """
import os, time
for _ in range(200):
    if os.fork() == 0:
        os._exit(0)
time.sleep(0.3)
zombies = sum(
    1 for p in os.listdir('/proc') if p.isdigit()
    and open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[0] == 'Z'
)
print(f"forked 200, {zombies} zombies before the parent exits", flush=True)
"""
COUNT_ZOMBIES = """
import os, time
time.sleep(0.5)
states = [open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[0]
          for p in os.listdir('/proc') if p.isdigit()]
print(f"after: {states.count('Z')} zombies, {len(states)} processes", flush=True)
"""


PY_FORK_BOMB = """
import errno, os
root = os.getpid()
told = False
while True:
    try:
        os.fork()
    except OSError as exc:
        if os.getpid() == root and not told:
            print(f"fork refused: {errno.errorcode[exc.errno]}", flush=True)
            told = True
"""


def test_fork_thread_and_zombie_bombs_are_capped_by_the_pids_limit(attacks):
    # The classic bomb; its first shell then stays for 10 s (a builtin loop: it cannot fork).
    shell_bomb = attacks.launch(
        "echo arming\nbash -c ':(){ :|:& };:; SECONDS=0; while ((SECONDS < 10)); do :; done'",
        timeout_seconds=20,
    )
    py_bomb = attacks.launch(f"echo arming\n{py(PY_FORK_BOMB)}", timeout_seconds=20)
    threads = attacks.launch(f"{py(THREAD_BOMB)}\necho after-threads")
    # (A second between rounds: init reaps 200 orphans at the sandbox's CPU quota.)
    zombies = attacks.launch("\n".join([py(ZOMBIES), "sleep 1"] * 3 + [py(COUNT_ZOMBIES)]))

    # Each bomb grows to the pids limit and no further (the kernel's count for the container;
    # on a loaded host it may take seconds to get there), and the host can still start
    # processes meanwhile.
    container_ids, peaks = [], []
    for run in (shell_bomb, py_bomb):
        run = wait_for_line(run, "arming")
        client = docker.from_env()
        container_ids.append(client.containers.get(run.sandbox_id).id)
        client.close()
        peaks.append(peak_pids(container_ids[-1], seconds=8))
    assert all(128 <= peak <= 256 for peak in peaks), peaks
    assert subprocess.run(["true"], check=False, timeout=10).returncode == 0

    shell_bomb, py_bomb, threads, zombies = attacks.wait(shell_bomb, py_bomb, threads, zombies)

    # The Python bomb never returns: the run ends at its deadline, with its log.
    assert (py_bomb.status, py_bomb.end_reason) == (S.TIMED_OUT, "timeout")
    # (Its "fork refused" line may not come out: 256 processes share its half core.)
    assert text_of(py_bomb)[0] == "arming"
    # The shell bomb's first shell returns after 10 s and leaves its children behind; however
    # the run then ends, it ends by itself within its deadline, and none of them outlive it.
    assert shell_bomb.is_terminal and text_of(shell_bomb)[0] == "arming"
    assert (shell_bomb.finished_at - shell_bomb.started_at).total_seconds() < 30
    for container_id in container_ids:
        assert pids_in_cgroup(container_id) == [], "bomb processes outlived their sandbox"

    assert (threads.status, threads.end_reason) == (S.SUCCEEDED, "completed"), threads.error_message
    capped = re.match(r"threads capped at (\d+): can't start new thread", text_of(threads)[0])
    assert capped and 100 < int(capped.group(1)) < 256, text_of(threads)
    assert text_of(threads)[-1] == "after-threads"

    assert (zombies.status, zombies.end_reason) == (S.SUCCEEDED, "completed"), text_of(zombies)
    lines = text_of(zombies)
    assert [line.split(",")[0] for line in lines[:3]] == ["forked 200"] * 3
    assert int(lines[0].split(", ")[1].split()[0]) >= 150, "the parent held its zombies"
    after = re.match(r"after: (\d+) zombies, (\d+) processes", lines[3])
    # The 600 are gone (round 3 could fork at all only because init reaped rounds 1-2); at
    # most a process of the run itself that exited a moment ago is still being reaped.
    assert after and int(after.group(1)) <= 2 and int(after.group(2)) < 10, lines[3]


# -- memory ---------------------------------------------------------------------------------------

STEPWISE = """
chunks = []
while True:
    chunks.append(bytearray(100 * 2**20))
    print(f"holding {len(chunks) * 100} MB", flush=True)
"""


def test_memory_bombs_end_as_oom_and_keep_the_log(attacks):
    big = attacks.launch("echo before-the-bomb\npython3 -c 'x = bytearray(2**34)'")
    steps = attacks.launch(f"echo before-the-steps\n{py(STEPWISE)}", memory_mb=256)
    for run, first in ((big, "before-the-bomb"), (steps, "before-the-steps")):
        (run,) = attacks.wait(run)
        assert (run.status, run.end_reason, run.exit_code) == (S.OOM, "oom", 137), run.error_message
        assert "ran out of memory" in run.error_message
        assert text_of(run)[0] == first
    holding = [line for line in text_of(steps) if line.startswith("holding")]
    # 256 MB: the first or second 100 MB step fits, the third never does.
    assert 1 <= len(holding) <= 2, holding


# -- disk, file size, file descriptors -------------------------------------------------------------

HUGE_SPARSE = """
import errno, os
fd = os.open('huge.bin', os.O_WRONLY | os.O_CREAT, 0o644)
try:
    os.pwrite(fd, b'x', 20 * 2**30)
    print('20 GB file written', flush=True)
except OSError as exc:
    print(f"refused: {errno.errorcode[exc.errno]}", flush=True)
"""
FD_BOMB = """
import errno
files = []
try:
    while True:
        files.append(open('/dev/null'))
except OSError as exc:
    print(f"fds capped at {len(files)}: {errno.errorcode[exc.errno]}", flush=True)
"""


def docker_root_free() -> int:
    return shutil.disk_usage("/var/lib/docker").free


def test_disk_fill_huge_files_and_descriptor_exhaustion_fail_inside_only(attacks):
    free_before = docker_root_free()
    fill = attacks.launch(
        "\n".join(
            [
                "head -c 150000000 /dev/zero > /tmp/fill; echo tmp rc=$?",
                "head -c 150000000 /dev/zero > fill; echo workspace rc=$?",
                "du -k /tmp/fill fill",
                "echo done",
            ]
        ),
        disk_mb=64,
    )
    huge = attacks.launch(
        f"{py(HUGE_SPARSE)}\ntruncate -s 20G big.bin; echo truncate rc=$?\nls -s huge.bin",
        disk_mb=64,
    )
    fds = attacks.launch(f"{py(FD_BOMB)}\necho still-works")
    fill, huge, fds = attacks.wait(fill, huge, fds)

    assert (fill.status, fill.end_reason) == (S.SUCCEEDED, "completed"), fill.error_message
    lines = text_of(fill)
    assert sum("No space left on device" in line for line in lines) == 2, lines
    assert "tmp rc=1" in lines and "workspace rc=1" in lines
    sizes = {line.split()[1]: int(line.split()[0]) for line in lines if line.endswith("fill")}
    assert sizes["/tmp/fill"] <= 64 * 1024 and sizes["fill"] <= 64 * 1024, sizes
    # 300 MB were asked for; the host's Docker disk did not lose them (other sessions on this
    # host write too, so the margin is generous but below what the attack asked for).
    assert free_before - docker_root_free() < 150 * MB

    assert (huge.status, huge.end_reason) == (S.SUCCEEDED, "completed"), huge.error_message
    lines = text_of(huge)
    assert lines[0] == "refused: EFBIG", lines
    # SIGXFSZ (25) kills truncate: exit status 128 + 25.
    assert "truncate rc=153" in lines, lines

    assert (fds.status, fds.end_reason) == (S.SUCCEEDED, "completed"), fds.error_message
    capped = re.match(r"fds capped at (\d+): EMFILE", text_of(fds)[0])
    assert capped and 1000 <= int(capped.group(1)) < 1024, text_of(fds)
    assert text_of(fds)[-1] == "still-works"


# -- CPU ------------------------------------------------------------------------------------------

# The neighbour counts loop iterations in 0.25 s slices for 12 s; the burner, started while the
# neighbour runs, forks four busy loops for 4 s. Slices before the burn are the baseline, slices
# during it the loaded rate: both measured by the same process within seconds of each other.
NEIGHBOUR = """
import time
end = time.time() + 12
while time.time() < end:
    start = time.time(); n = 0
    while time.time() - start < 0.25:
        for _ in range(1000):
            n += 1
    print(f"slice {start:.3f} {n / (time.time() - start):.0f}", flush=True)
"""
BURNER = """
import os, time
start = time.time()
print(f"burn {start:.3f}", flush=True)
children = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        while time.time() - start < 4:
            pass
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
used = os.times().children_user + os.times().children_system
print(f"end {time.time():.3f}", flush=True)
print(f"cpu {used:.3f}", flush=True)
"""


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def test_a_cpu_burner_does_not_starve_its_neighbour(attacks):
    neighbour = attacks.launch(py(NEIGHBOUR), cpu_cores=1.0, timeout_seconds=60)
    wait_for_line(neighbour, "slice")
    time.sleep(1.5)  # a few more baseline slices
    burner = attacks.launch(py(BURNER), cpu_cores=0.5, timeout_seconds=60)
    neighbour, burner = attacks.wait(neighbour, burner)
    assert neighbour.status == burner.status == S.SUCCEEDED, (neighbour.error_message, burner)
    marks = dict(line.split() for line in text_of(burner))
    burn_start, burn_end = float(marks["burn"]), float(marks["end"])
    # The burner got at most its quota: half a core-second per second for its four loops.
    assert float(marks["cpu"]) / (burn_end - burn_start) < 0.6, marks
    slices = [tuple(map(float, line.split()[1:])) for line in text_of(neighbour)]
    before = [rate for at, rate in slices if at + 0.25 < burn_start]
    during = [rate for at, rate in slices if burn_start + 0.5 < at and at + 0.25 < burn_end]
    assert len(before) >= 4 and len(during) >= 6, (len(before), len(during))
    ratio = median(during) / median(before)
    # Unloaded, the neighbour keeps its core (ratio ~1). When other work on this host squeezes
    # all containers, each still gets an equal share however many processes it runs (ratio
    # >= ~0.5); a neighbour starved by the burner (more CPU weight, a lost quota on a busy
    # host) falls far below.
    assert ratio > 0.4, f"the neighbour ran at {ratio:.2f} of its rate before the burn"


# -- hangs and signals ----------------------------------------------------------------------------

IGNORE_TERM = """
import signal, subprocess
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen(['sh', '-c', "trap '' TERM; while :; do sleep 1; done"])
print('armed', flush=True)
while True:
    pass
"""


def test_infinite_loops_ignoring_sigterm_die_at_the_deadline_and_on_cancel(attacks):
    loop = attacks.launch(
        "echo looping\nsh -c \"trap '' TERM; while :; do :; done\"", timeout_seconds=10
    )
    stubborn = attacks.launch(py(IGNORE_TERM), timeout_seconds=120)
    stubborn = wait_for_line(stubborn, "armed")
    requested = time.monotonic()
    services.cancel_run(run=stubborn, user=stubborn.user)
    (stubborn,) = attacks.wait(stubborn, timeout=40)
    cancel_took = time.monotonic() - requested
    (loop,) = attacks.wait(loop)

    assert (loop.status, loop.end_reason) == (S.TIMED_OUT, "timeout")
    assert text_of(loop)[0] == "looping"
    ran = (loop.finished_at - loop.started_at).total_seconds()
    # Ends at its 10 s deadline, which counts from the sandbox's creation (a moment before the run
    # is marked running); the bound allows the kill and final bookkeeping on a busy host.
    assert 8 <= ran < 30, ran

    assert (stubborn.status, stubborn.end_reason) == (S.CANCELLED, "cancelled")
    # The watcher force-destroys a sandbox whose processes do not let go after 10 s.
    assert cancel_took < 25, cancel_took


# -- output floods --------------------------------------------------------------------------------


def worker_children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def test_output_floods_are_capped_and_the_worker_stays_small(attacks):
    children = worker_children(attacks.worker.process.pid)
    assert children, "the prefork worker has child processes"
    rss_before = {}
    for pid in children:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
        rss_before[pid] = memory_kb(pid, "VmRSS")

    # ~39 MB in 5 million short lines, and one 100 MB line without a newline; the log keeps
    # 1 MB and the run is killed past 4 MB (RUN_LOG_HARD_LIMIT_FACTOR).
    lines = attacks.launch("seq 1 5000000", log_limit_mb=1)
    line = attacks.launch("head -c 100000000 /dev/zero | tr '\\0' x", log_limit_mb=1)
    lines, line = attacks.wait(lines, line)

    for run in (lines, line):
        assert (run.status, run.end_reason) == (S.FAILED, "output_limit"), run.error_message
        assert run.log_bytes <= 1 * MB + 64 * 1024 and run.log_dropped_bytes > 0
        assert RunEvent.objects.filter(run=run, type="log_truncated").count() == 1
    kept = text_of(lines, 10)
    assert kept[:3] == ["1", "2", "3"]
    kept = text_of(line, 1000)
    assert kept and all(set(piece) == {"x"} and len(piece) <= 16 * 1024 for piece in kept)

    growth_mb = max(memory_kb(pid, "VmHWM") - rss_before[pid] for pid in children) / 1024
    # The long line alone is 100 MB: a worker buffering it would grow by more than that.
    assert growth_mb < 60, f"a worker process grew by {growth_mb:.0f} MB"
    assert all(os.path.exists(f"/proc/{pid}") for pid in children), "no worker process died"

    client = Client()
    client.force_login(line.user)
    for run in (lines, line):
        page = client.get(reverse("runs:detail", args=[run.pk]))
        assert page.status_code == 200
        assert b"Log truncated at 1 MB" in page.content
        assert len(page.content) < 2 * MB  # a tail of the log, not the flood
