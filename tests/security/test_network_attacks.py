"""Network attacks (reference §2.2) from users' runs in every network mode, on a real worker.

tests/sandboxes/test_network.py proves the modes at the sandbox layer (links, group reach,
egress, ICC, the metadata drop). Here the same attacker is a *run*: its project picks the mode,
the worker builds the sandbox, and the probe reports what the kernel answered. Probes only go
to this host's own addresses, loopback, other local sandboxes, the documentation range
(192.0.2.1, only from modes without egress), and the metadata address only from isolated and
bridge sandboxes, whose bridges our DOCKER-USER rule covers (its packet counter is the proof).
Mode none is checked with a UDP ``connect``, which only asks the routing table.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from apps.runs.models import Run
from apps.runs.selectors import log_lines
from apps.sandboxes.hostnet import METADATA_CIDR, rule_packet_count
from tests.projects.factories import make_user
from tests.sandboxes.test_network import UNROUTABLE, package_mirror_host
from tests.security.conftest import parse_facts, py

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker]
S = Run.Status
MODES = ("none", "isolated", "bridge")

PROBE = r"""
import base64, errno, json, os, socket, subprocess

cfg = json.loads(base64.b64decode(CONFIG))


def fact(name, value):
    # One write per line (print() writes the newline separately when unbuffered).
    os.write(1, f"fact {name} {json.dumps(value)}\n".encode())


def code(exc):
    if isinstance(exc, socket.timeout):
        return "timeout"
    return errno.errorcode.get(exc.errno, str(exc)) if exc.errno else type(exc).__name__


def connect(host, port):
    try:
        socket.create_connection((host, port), timeout=1.5).close()
        return "open"
    except OSError as exc:
        return code(exc)


def route(host):
    # A UDP connect only asks the routing table: nothing is sent.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((host, 80))
        return "routed"
    except OSError as exc:
        return code(exc)
    finally:
        s.close()


def open_socket(*args):
    try:
        socket.socket(*args).close()
        return "ok"
    except OSError as exc:
        return code(exc)


gateway = None
for line in open("/proc/net/route").read().splitlines()[1:]:
    fields = line.split()
    if fields[1] == "00000000":
        gateway = socket.inet_ntoa(bytes.fromhex(fields[2])[::-1])
fact("links", sorted(os.listdir("/sys/class/net")))
fact("gateway", gateway)
fact("address", [a for a in subprocess.run(["hostname", "-i"], capture_output=True,
                                           text=True).stdout.split() if ":" not in a])
hosts = cfg["hosts"] + ([gateway] if gateway else [])
fact("host_services", {f"{h}:{p}": connect(h, p) for h in hosts for p in cfg["ports"]})
fact("metadata_route", route("169.254.169.254"))
if cfg["probe_metadata"]:
    fact("metadata", connect("169.254.169.254", 80))
if cfg["probe_unroutable"]:
    fact("unroutable", connect(cfg["unroutable"], 443))
if cfg["mirror"]:
    fact("dns", subprocess.run(["getent", "hosts", cfg["mirror"]], capture_output=True).returncode)
fact("raw_icmp", open_socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
fact("raw_tcp", open_socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP))
fact("packet", open_socket(socket.AF_PACKET, socket.SOCK_RAW, 0x0300))
for peer in cfg["peers"]:
    fact("peer:" + peer, connect(peer, 8000))
print("probe done", flush=True)
"""
# A server that says its address once it answers on it (checked from inside: the host cannot
# reach an isolated network, so the positive control has to come from the sandbox itself).
SERVE = "\n".join(
    [
        "sh -c 'python3 -m http.server 8000 --bind 0.0.0.0 >/dev/null 2>&1 &'",
        py(
            "import socket, subprocess, time\n"
            "me = subprocess.run(['hostname', '-i'], capture_output=True, text=True)"
            ".stdout.split()[0]\n"
            "for _ in range(100):\n"
            "    try:\n"
            "        socket.create_connection((me, 8000), timeout=1).close()\n"
            "        break\n"
            "    except OSError:\n"
            "        time.sleep(0.1)\n"
            "print('serving', me, flush=True)\n"
        ),
        "sleep 120",
    ]
)


def host_addresses() -> list[str]:
    """Every IPv4 address of this host except loopback (eth0, the sandbox bridges' gateways)."""
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    found = [line.split()[3].split("/")[0] for line in out.splitlines()]
    return [address for address in found if not address.startswith("127.")]


def probe_commands(*, hosts: list[str], ports: list[int], mode: str, peers: list[str] = ()) -> str:
    config = {
        "hosts": hosts,
        "ports": ports,
        "probe_metadata": mode != "none",
        "probe_unroutable": mode != "bridge",
        "unroutable": UNROUTABLE,
        "mirror": package_mirror_host() if mode != "bridge" else None,
        "peers": list(peers),
    }
    encoded = base64.b64encode(json.dumps(config).encode()).decode()
    return py(PROBE.replace("CONFIG", repr(encoded)))


def facts_of(run: Run) -> dict:
    lines = [line.text for line in log_lines(run=run, first=1, last=10**5)]
    assert lines and lines[-1] == "probe done", (run.status, run.error_message, lines[-10:])
    facts = parse_facts(lines)
    return facts


@pytest.fixture
def web_listener() -> Iterator[int]:
    """A TCP port open on every address of the host: what daphne bound to 0.0.0.0 would be."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", 0))  # the point: reachable on every host address
    server.listen(64)
    yield server.getsockname()[1]
    server.close()


def test_host_services_metadata_and_raw_sockets_in_every_mode(attacks, web_listener):
    hosts = host_addresses()
    # The listener answers on those addresses from the host itself, so "unreachable" below
    # is the sandbox's confinement, not a dead port.
    for address in hosts:
        socket.create_connection((address, web_listener), timeout=2).close()
    ports = [web_listener, 6379, 5432, 2375, 2376]
    before = rule_packet_count("DOCKER-USER", METADATA_CIDR)
    runs = {
        mode: attacks.launch(probe_commands(hosts=hosts, ports=ports, mode=mode), network_mode=mode)
        for mode in MODES
    }
    done = dict(zip(runs, attacks.wait(*runs.values()), strict=True))
    facts = {}
    for mode, run in done.items():
        assert (run.status, run.end_reason) == (S.SUCCEEDED, "completed"), run.error_message
        facts[mode] = facts_of(run)

    for mode, found in facts.items():
        opened = {target: result for target, result in found["host_services"].items()}
        assert "open" not in opened.values(), (mode, opened)
        # No raw sockets (NET_RAW is dropped): no ping floods, no spoofing, no sniffing.
        assert (found["raw_icmp"], found["raw_tcp"], found["packet"]) == ("EPERM",) * 3, mode
    # Without a network there is no route to the metadata service, or anywhere, at all ...
    assert facts["none"]["links"] == ["lo"] and facts["none"]["gateway"] is None
    assert facts["none"]["metadata_route"] == "ENETUNREACH", facts["none"]
    assert facts["none"]["unroutable"] == "ENETUNREACH", facts["none"]
    # ... an isolated network routes to its bridge, where nothing is forwarded out ...
    assert facts["isolated"]["unroutable"] in ("timeout", "EHOSTUNREACH"), facts["isolated"]
    for mode in ("none", "isolated"):
        if "dns" in facts[mode]:
            assert facts[mode]["dns"] != 0, f"{mode}: a name resolved"
    # ... and from isolated and bridge sandboxes the packets to it hit our DROP rule.
    for mode in ("isolated", "bridge"):
        assert facts[mode]["metadata"] == "timeout", (mode, facts[mode])
    assert rule_packet_count("DOCKER-USER", METADATA_CIDR) > before


def test_other_tenants_sandboxes_are_unreachable(attacks):
    """Team A serves HTTP from an isolated and a bridge run; team B's runs in both modes cannot
    connect to either."""
    servers = {
        mode: attacks.launch(SERVE, network_mode=mode, timeout_seconds=150)
        for mode in ("isolated", "bridge")
    }
    addresses = {}
    for mode, run in servers.items():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and mode not in addresses:
            for line in log_lines(run=run, first=1, last=5):
                if line.text.startswith("serving "):
                    addresses[mode] = line.text.split()[1]
            time.sleep(0.2)
        assert mode in addresses, f"the {mode} server never answered"
    peers = [addresses["isolated"], addresses["bridge"]]
    attacks.user = make_user()  # another team from here on
    probes = {
        "other team, isolated": attacks.launch(
            probe_commands(hosts=[], ports=[], mode="isolated", peers=peers),
            network_mode="isolated",
        ),
        "other team, bridge": attacks.launch(
            probe_commands(hosts=[], ports=[], mode="bridge", peers=peers),
            network_mode="bridge",
        ),
    }
    done = dict(zip(probes, attacks.wait(*probes.values()), strict=True))
    for server in servers.values():
        services_cancel(server)
    for name, run in done.items():
        assert run.status == S.SUCCEEDED, (name, run.error_message)
        found = facts_of(run)
        for peer in peers:
            assert found[f"peer:{peer}"] != "open", (name, peer, found)
        assert found["address"] and found["address"][0] not in peers


def services_cancel(run: Run) -> None:
    from apps.runs import services

    services.cancel_run(run=Run.objects.get(pk=run.pk), user=run.user)
