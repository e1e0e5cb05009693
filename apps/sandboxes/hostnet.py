"""Host firewall and traffic shaping for sandbox networks (iptables, tc; never a shell).

Every bridge this layer creates is named ``sbx...``, so a few static rules cover all of them:

* ``INPUT -i sbx+ -j DROP`` - a sandbox can never open a connection to the host itself (any of
  its addresses, including the bridge gateway: Redis, PostgreSQL, the Docker API, the app).
* ``DOCKER-USER -i sbx+ ! -o sbx+ -d <cidr> -j DROP`` for the cloud metadata range
  (169.254.0.0/16) and the private ranges (RFC 1918, CGNAT) - no metadata service, no LAN
  services (a database in the same VPC) through the forward path. ``! -o sbx+`` leaves traffic
  between members of one isolated group alone (Docker's own chains separate different bridges).
* ``... -d <resolver> -p udp|tcp --dport 53 -j RETURN`` above those drops, for the host's DNS
  servers: Docker's embedded DNS forwards lookups from inside the sandbox's namespace, so a
  private-range resolver would otherwise be cut off and every lookup would hang for 20 s.

Docker keeps ``DOCKER-USER`` first in ``FORWARD`` and never flushes it. The rules are checked
(``-C``) at most once a minute per process and rewritten as a block when any is missing, so a
firewall reload heals and the order (RETURNs above DROPs) always holds.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable

from .errors import NetworkPolicyUnavailable, SandboxError, UnsupportedLimit

BRIDGE_PREFIX = "sbx"
METADATA_CIDR = "169.254.0.0/16"
PRIVATE_CIDRS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
_LOCK_PATH = "/run/sandboxweb-iptables.lock"
_RECHECK_SECONDS = 60.0
_checked_at: dict[tuple[str, ...], float] = {}
_installed_lock = threading.Lock()
_RESOLV_FILES = ("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf")


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


def resolver_addresses() -> list[str]:
    """The IPv4 DNS servers Docker's embedded DNS forwards to (as Docker picks them)."""
    for path in _RESOLV_FILES:
        found = []
        try:
            with open(path) as fh:
                lines = fh.read().splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                try:
                    address = ipaddress.ip_address(parts[1])
                except ValueError:
                    continue
                if address.version == 4 and not address.is_loopback:
                    found.append(str(address))
        if found:
            return found
    return []


def required_rules(
    blocked_cidrs: Iterable[str], resolvers: Iterable[str] = ()
) -> list[tuple[str, list[str]]]:
    """Our rules, top to bottom within each chain."""
    iface = BRIDGE_PREFIX + "+"
    leaving = ["-i", iface, "!", "-o", iface]
    rules = [("INPUT", ["-i", iface, "-j", "DROP"])]
    for address in resolvers:
        for proto in ("udp", "tcp"):
            rules.append(
                (
                    "DOCKER-USER",
                    [*leaving, "-d", f"{address}/32", "-p", proto, "--dport", "53", "-j", "RETURN"],
                )
            )
    for cidr in blocked_cidrs:
        rules.append(("DOCKER-USER", [*leaving, "-d", cidr, "-j", "DROP"]))
    return rules


def ensure_rules(blocked_cidrs: Iterable[str]) -> None:
    """Install the isolation rules if missing. Raises NetworkPolicyUnavailable if it cannot."""
    cidrs = tuple(blocked_cidrs)
    with _installed_lock:
        if time.monotonic() - _checked_at.get(cidrs, -1e9) < _RECHECK_SECONDS:
            return
        problem = firewall_problem()
        if problem:
            raise NetworkPolicyUnavailable(
                f"Network isolation cannot be guaranteed: {problem}. Use network_mode='none', "
                "or run the worker as root on the Docker host."
            )
        rules = required_rules(cidrs, resolver_addresses())
        lock_fd = os.open(_LOCK_PATH, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            if _iptables(["-n", "-L", "DOCKER-USER"]).returncode != 0:
                made = _iptables(["-N", "DOCKER-USER"])
                if made.returncode != 0 and "exists" not in made.stderr:
                    raise NetworkPolicyUnavailable(f"iptables -N DOCKER-USER: {made.stderr}")
            for chain in ("INPUT", "DOCKER-USER"):
                mine = [spec for c, spec in rules if c == chain]
                if all(_iptables(["-C", chain, *spec]).returncode == 0 for spec in mine):
                    continue
                for spec in mine:  # rewrite the block so the order is right
                    while _iptables(["-D", chain, *spec]).returncode == 0:
                        pass
                for spec in reversed(mine):
                    done = _iptables(["-I", chain, "1", *spec])
                    if done.returncode != 0:
                        raise NetworkPolicyUnavailable(
                            f"Installing the sandbox firewall rule '{chain} {' '.join(spec)}' "
                            f"failed: {done.stderr.strip()}"
                        )
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            os.close(lock_fd)
        _checked_at[cidrs] = time.monotonic()


def rule_packet_count(chain: str, cidr: str) -> int:
    """Packets our DROP rule for ``cidr`` in ``chain`` has matched so far (tests, diagnostics)."""
    done = _iptables(["-v", "-S", chain])
    total = 0
    for line in done.stdout.splitlines():
        words = line.split()
        if (
            f"-i {BRIDGE_PREFIX}+" in line
            and "-d" in words
            and words[words.index("-d") + 1] == cidr
            and line.rstrip().endswith("-j DROP")
            and "-c" in words
        ):
            total += int(words[words.index("-c") + 1])
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
