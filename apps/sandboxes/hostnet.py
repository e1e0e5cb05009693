"""Host firewall and traffic shaping for sandbox networks (iptables, tc; never a shell).

Every bridge this layer creates is named ``sbx...``, so two static rules cover all of them:

* ``INPUT -i sbx+ -j DROP`` - a sandbox can never open a connection to the host itself (any of
  its addresses, including the bridge gateway: Redis, PostgreSQL, the Docker API, the app).
* ``DOCKER-USER -i sbx+ -d 169.254.0.0/16 -j DROP`` (and any extra blocked CIDR) - no cloud
  metadata service and no link-local neighbours through the forward path.

Docker itself keeps ``DOCKER-USER`` first in ``FORWARD`` and never flushes it; the rules are
re-checked (``-C``) once per process and inserted when missing, so a firewall reload heals.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import threading
from collections.abc import Iterable

from .errors import NetworkPolicyUnavailable, SandboxError, UnsupportedLimit

BRIDGE_PREFIX = "sbx"
_LOCK_PATH = "/run/sandboxweb-iptables.lock"
_installed: set[tuple[str, ...]] = set()
_installed_lock = threading.Lock()


def firewall_problem() -> str | None:
    if os.geteuid() != 0:
        return "the sandbox layer does not run as root, so it cannot install iptables rules"
    if shutil.which("iptables") is None:
        return "iptables is not installed"
    return None


def _iptables(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["iptables", "-w", "10", *args], capture_output=True, text=True, timeout=30, check=False
    )


def required_rules(blocked_cidrs: Iterable[str]) -> list[tuple[str, list[str]]]:
    iface = BRIDGE_PREFIX + "+"
    rules = [("INPUT", ["-i", iface, "-j", "DROP"])]
    for cidr in blocked_cidrs:
        rules.append(("DOCKER-USER", ["-i", iface, "-d", cidr, "-j", "DROP"]))
    return rules


def ensure_rules(blocked_cidrs: Iterable[str]) -> None:
    """Install the isolation rules if missing. Raises NetworkPolicyUnavailable if it cannot."""
    cidrs = tuple(blocked_cidrs)
    with _installed_lock:
        if cidrs in _installed:
            return
        problem = firewall_problem()
        if problem:
            raise NetworkPolicyUnavailable(
                f"Network isolation cannot be guaranteed: {problem}. Use network_mode='none', "
                "or run the worker as root on the Docker host."
            )
        lock_fd = os.open(_LOCK_PATH, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            for chain, spec in required_rules(cidrs):
                if _iptables(["-C", chain, *spec]).returncode == 0:
                    continue
                if chain == "DOCKER-USER" and _iptables(["-n", "-L", chain]).returncode != 0:
                    made = _iptables(["-N", chain])
                    if made.returncode != 0 and "exists" not in made.stderr:
                        raise NetworkPolicyUnavailable(f"iptables -N {chain}: {made.stderr}")
                done = _iptables(["-I", chain, "1", *spec])
                if done.returncode != 0:
                    raise NetworkPolicyUnavailable(
                        f"Installing the sandbox firewall rule '{chain} {' '.join(spec)}' "
                        f"failed: {done.stderr.strip()}"
                    )
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            os.close(lock_fd)
        _installed.add(cidrs)


def rule_packet_count(chain: str, spec: list[str]) -> int:
    """Packets matched so far by one of our rules (for tests and diagnostics)."""
    done = _iptables(["-n", "-v", "-x", "-L", chain])
    iface = spec[spec.index("-i") + 1] if "-i" in spec else None
    dest = spec[spec.index("-d") + 1] if "-d" in spec else "0.0.0.0/0"
    total = 0
    for line in done.stdout.splitlines()[2:]:
        parts = line.split()
        if len(parts) >= 9 and parts[2] == "DROP" and parts[5] == iface and parts[8] == dest:
            total += int(parts[0])
    return total


# -- bandwidth -------------------------------------------------------------------------------


def shaping_problem() -> str | None:
    if os.geteuid() != 0:
        return "the sandbox layer does not run as root (tc needs CAP_NET_ADMIN on the host)"
    for tool in ("tc", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: iproute2 / util-linux)"
    return None


def _tc(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise UnsupportedLimit(
            f"Applying network_mbps failed ({' '.join(argv[-12:])}): {done.stderr.strip()}"
        )


def host_veth_for(pid: int) -> str:
    """The host-side veth of the container whose init has host pid ``pid``."""
    try:
        with open(f"/proc/{pid}/root/sys/class/net/eth0/iflink") as fh:
            peer_index = int(fh.read().strip())
    except (OSError, ValueError) as exc:
        raise UnsupportedLimit(f"Cannot find the sandbox's network interface ({exc})") from exc
    for name in os.listdir("/sys/class/net"):
        try:
            with open(f"/sys/class/net/{name}/ifindex") as fh:
                if int(fh.read().strip()) == peer_index:
                    return name
        except (OSError, ValueError):
            continue
    raise UnsupportedLimit("Cannot find the host side of the sandbox's veth pair")


def apply_bandwidth(pid: int, mbps: float) -> None:
    """Shape both directions to ``mbps`` megabit/s with a token bucket on each end of the veth."""
    problem = shaping_problem()
    if problem:
        raise UnsupportedLimit(f"network_mbps cannot be enforced here: {problem}")
    kbit = max(8, int(mbps * 1000))
    burst = max(16 * 1024, int(mbps * 1e6 / 8 / 50))  # ~20 ms of traffic, at least 16 KiB
    shape = ["tbf", "rate", f"{kbit}kbit", "burst", str(burst), "latency", "100ms"]
    veth = host_veth_for(pid)
    _tc(["tc", "qdisc", "replace", "dev", veth, "root", *shape])  # host -> sandbox
    _tc(
        [
            "nsenter",
            f"--net=/proc/{pid}/ns/net",
            "tc",
            "qdisc",
            "replace",
            "dev",
            "eth0",
            "root",
            *shape,
        ]
    )  # sandbox -> world


def check_bridge_name(name: str) -> str:
    if not name.startswith(BRIDGE_PREFIX) or len(name) > 15:
        raise SandboxError(
            f"Sandbox network {name!r} must start with {BRIDGE_PREFIX!r} and be at most 15 "
            "characters (it is also the bridge interface name the firewall rules match)."
        )
    return name
