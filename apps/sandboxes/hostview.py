"""Direct reads of a local container's cgroup and /proc entries (no engine round trip).

``docker stats`` waits for the daemon's 1 s collection tick; the same kernel counters are a file
read away when the engine runs on this host. ``HostView.attach`` returns None when it does not
(remote engine, other pid namespace, no permission), and callers fall back to the engine API.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

CGROUP_ROOT = "/sys/fs/cgroup"


@dataclass
class HostView:
    container_id: str
    pid: int
    v2: bool
    dirs: dict[str, str]  # controller -> cgroup directory ("" key for the v2 unified dir)

    @classmethod
    def attach(cls, container_id: str, pid: int) -> HostView | None:
        if not pid:
            return None
        try:
            with open(f"/proc/{pid}/cgroup") as fh:
                lines = fh.read().splitlines()
        except OSError:
            return None
        if not any(container_id in line for line in lines):
            return None  # pid from another host or namespace
        dirs: dict[str, str] = {}
        v2 = False
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                v2 = True
                dirs[""] = os.path.join(CGROUP_ROOT, path.lstrip("/"))
            for controller in controllers.split(","):
                if controller in ("memory", "cpuacct", "pids", "cpu", "freezer"):
                    dirs[controller] = os.path.join(CGROUP_ROOT, controller, path.lstrip("/"))
        if "memory" in dirs:
            v2 = False
        elif not v2:
            return None
        view = cls(container_id=container_id, pid=pid, v2=v2, dirs=dirs)
        try:
            view.memory_usage()
        except OSError:
            return None
        return view

    def _dir(self, controller: str) -> str:
        return self.dirs[""] if self.v2 else self.dirs[controller]

    def _read(self, controller: str, name: str) -> str:
        with open(os.path.join(self._dir(controller), name)) as fh:
            return fh.read()

    def _keyed(self, controller: str, name: str) -> dict[str, int]:
        values = {}
        for line in self._read(controller, name).splitlines():
            key, _, value = line.partition(" ")
            if value.strip().lstrip("-").isdigit():
                values[key] = int(value)
        return values

    def alive(self) -> bool:
        return os.path.exists(self._dir("memory"))

    def memory_usage(self) -> int:
        """Bytes in use, excluding reclaimable page cache (what `docker stats` shows)."""
        if self.v2:
            usage = int(self._read("memory", "memory.current"))
            inactive = self._keyed("memory", "memory.stat").get("inactive_file", 0)
        else:
            usage = int(self._read("memory", "memory.usage_in_bytes"))
            inactive = self._keyed("memory", "memory.stat").get("total_inactive_file", 0)
        return max(0, usage - inactive)

    def memory_limit(self) -> int:
        if self.v2:
            raw = self._read("memory", "memory.max").strip()
            return 0 if raw == "max" else int(raw)
        return int(self._read("memory", "memory.limit_in_bytes"))

    def oom_kills(self) -> int:
        if self.v2:
            return self._keyed("memory", "memory.events").get("oom_kill", 0)
        return self._keyed("memory", "memory.oom_control").get("oom_kill", 0)

    def cpu_usage_ns(self) -> int:
        if self.v2:
            return self._keyed("cpu", "cpu.stat").get("usage_usec", 0) * 1000
        return int(self._read("cpuacct", "cpuacct.usage"))

    def pids_current(self) -> int:
        return int(self._read("pids", "pids.current"))

    def procs(self) -> list[int]:
        return [int(p) for p in self._read("pids", "cgroup.procs").split()]

    @contextlib.contextmanager
    def frozen(self, timeout: float = 3.0) -> Iterator[bool]:
        """Freeze every process of the container (cgroup freezer) for the duration; yields
        whether the kernel reported the group frozen within ``timeout``. Processes forking in a
        loop cannot outrun it: their children are born frozen. Always thawed afterwards."""
        events: str | None = None  # v2 reports "frozen 1" there; v1 in the state file
        if self.v2:
            control = os.path.join(self.dirs[""], "cgroup.freeze")
            events = os.path.join(self.dirs[""], "cgroup.events")
            freeze, thaw = "1", "0"
        elif "freezer" in self.dirs:
            control = os.path.join(self.dirs["freezer"], "freezer.state")
            freeze, thaw = "FROZEN", "THAWED"
        else:
            yield False
            return
        try:
            with open(control, "w") as fh:
                fh.write(freeze)
        except OSError:
            yield False
            return
        try:
            yield self._wait_frozen(control, events, time.monotonic() + timeout)
        finally:
            with contextlib.suppress(OSError), open(control, "w") as fh:
                fh.write(thaw)

    @staticmethod
    def _wait_frozen(control: str, events: str | None, deadline: float) -> bool:
        while True:
            try:
                if events is None:
                    with open(control) as fh:
                        done = fh.read().strip() == "FROZEN"
                else:
                    with open(events) as fh:
                        done = "frozen 1" in fh.read().splitlines()
            except OSError:
                return False
            if done or time.monotonic() > deadline:
                return done
            time.sleep(0.01)

    def network_bytes(self) -> tuple[int, int]:
        rx = tx = 0
        with open(f"/proc/{self.pid}/net/dev") as fh:
            for line in fh.read().splitlines()[2:]:
                name, _, data = line.partition(":")
                if name.strip() == "lo":
                    continue
                fields = data.split()
                rx += int(fields[0])
                tx += int(fields[8])
        return rx, tx

    def kill_tagged(self, token: bytes, *, prefix: bool = False, rounds: int = 50) -> int:
        """SIGKILL every process of the container whose environment holds ``token`` (or, with
        ``prefix``, any variable starting with it).

        Works even when the container is at its pids limit (nothing has to be spawned inside),
        and finds processes that left their process group. Stops them first so a forking loop
        cannot outrun the killer.
        """
        killed = 0
        for _ in range(rounds):
            tagged = []
            for pid in self.procs():
                try:
                    with open(f"/proc/{pid}/environ", "rb") as fh:
                        environ = fh.read()
                except OSError:
                    continue
                variables = environ.split(b"\0")
                if prefix:
                    if any(v.startswith(token) for v in variables):
                        tagged.append(pid)
                elif token in variables:
                    tagged.append(pid)
            if not tagged:
                return killed
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                for pid in tagged:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
            killed += len(tagged)
            time.sleep(0.005)
        return killed
