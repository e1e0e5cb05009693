"""Network modes: none (loopback only), isolated (group-internal), bridge (egress, no host/IMDS)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import docker
from apps.sandboxes import SandboxConfig
from apps.sandboxes.hostnet import rule_packet_count

pytestmark = pytest.mark.docker

PROBE = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()\n"
    "    print('open')\n"
    "except OSError as exc:\n"
    "    print('closed', exc)\n"
)
SERVE = "python3 -m http.server 8000 --bind 0.0.0.0 >/dev/null 2>&1 &"


def reach(box, host: str, port: int) -> bool:
    out = box.execute("python3", ["-c", PROBE, host, str(port)], timeout=20).stdout
    return out.startswith("open")


# An address from the documentation range (TEST-NET-1): never routed anywhere, so a probe that
# somehow got out would still reach nobody.
UNROUTABLE = "192.0.2.1"


def package_mirror_host() -> str | None:
    """A host this machine is allowed to reach (its Debian mirror), read from APT's own config."""
    for path in sorted(Path("/etc/apt").glob("sources.list.d/*.sources")):
        for line in path.read_text().splitlines():
            if line.startswith("URIs:"):
                host = urlsplit(line.split(":", 1)[1].split()[0]).hostname
                if host:
                    return host
    sources_list = Path("/etc/apt/sources.list")
    if sources_list.is_file():
        for line in sources_list.read_text().splitlines():
            parts = line.split()
            if parts and parts[0] == "deb":
                uri = next((p for p in parts[1:] if "://" in p), None)
                if uri and urlsplit(uri).hostname:
                    return urlsplit(uri).hostname
    return None


def host_reaches(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError:
        return False
    return True


def gateway_of(network: str) -> str:
    client = docker.from_env()
    try:
        return client.networks.get(network).attrs["IPAM"]["Config"][0]["Gateway"]
    finally:
        client.close()


@pytest.fixture
def host_listener() -> Iterator[int]:
    """A TCP port open on every address of the host (what Redis/Postgres/the app would be)."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", 0))
    server.listen(16)
    yield server.getsockname()[1]
    server.close()


def test_none_has_only_loopback(shared_box):
    links = shared_box.execute("ip", ["-o", "link"]).stdout
    assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
    assert not reach(shared_box, UNROUTABLE, 443)


def test_isolated_group_members_reach_each_other_and_nothing_else(manager, host_listener):
    group = f"g-{time.time_ns()}"
    a = manager.create_sandbox(SandboxConfig(network_mode="isolated", network_group=group))
    b = manager.create_sandbox(SandboxConfig(network_mode="isolated", network_group=group))
    stranger = manager.create_sandbox(SandboxConfig(network_mode="isolated"))
    try:
        assert a.network == b.network != stranger.network
        b.execute("sh", ["-c", SERVE])
        time.sleep(0.7)
        assert reach(a, b.id, 8000), "members of a group talk to each other (by sandbox id)"
        b_ip = b.execute("hostname", ["-i"]).stdout.split()[0]
        assert not reach(stranger, b_ip, 8000), "other groups cannot reach in"
        assert not reach(a, gateway_of(a.network), host_listener), "the host is unreachable"
        assert not reach(a, UNROUTABLE, 443), "no way out"
        mirror = package_mirror_host()
        if mirror:
            assert a.execute("getent", ["hosts", mirror]).exit_code != 0, "no DNS out"
        network = a.network
        a.destroy()
        assert docker.from_env().networks.get(network), "b still uses it"
        b.destroy()
        with pytest.raises(docker.errors.NotFound):
            docker.from_env().networks.get(network)  # gone with its last member
    finally:
        for box in (a, b, stranger):
            box.destroy()


def test_bridge_reaches_out_but_not_the_host_or_metadata(manager, host_listener):
    box = manager.create_sandbox(SandboxConfig(network_mode="bridge"))
    peer = manager.create_sandbox(SandboxConfig(network_mode="bridge"))
    try:
        gateway = gateway_of(box.config.docker.egress_network)
        # The listener is reachable from the host itself on that address ...
        socket.create_connection((gateway, host_listener), timeout=2).close()
        # ... but not from the sandbox: not on the bridge gateway, not on the host's own IPs.
        assert not reach(box, gateway, host_listener)
        host_ip = socket.gethostbyname(socket.gethostname())
        if not host_ip.startswith("127."):
            assert not reach(box, host_ip, host_listener)
        # Cloud metadata and private networks (a database in the same VPC): dropped by our
        # DOCKER-USER rules, whose packet counters prove they are what stopped the packets.
        # (Only the metadata address is probed: the private-range rules are the same mechanism,
        # and a probe must never leave this host should a rule be missing.)
        before = rule_packet_count("DOCKER-USER", "169.254.0.0/16")
        assert not reach(box, "169.254.169.254", 80)
        assert rule_packet_count("DOCKER-USER", "169.254.0.0/16") > before
        # Sandboxes on the egress bridge cannot reach each other (ICC off).
        peer.execute("sh", ["-c", SERVE])
        time.sleep(0.7)
        peer_ip = peer.execute("hostname", ["-i"]).stdout.split()[0]
        assert not reach(box, peer_ip, 8000)
        # Egress itself, and DNS through the host's resolver, work whenever this host has them.
        mirror = package_mirror_host()
        if mirror and host_reaches(mirror, 80):
            assert reach(box, mirror, 80)
    finally:
        box.destroy()
        peer.destroy()
