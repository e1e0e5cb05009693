"""Docker-specific lifecycle: engine resources (volume, network, disk image), engine errors,
leftover volumes. The generic lifecycle contract runs on Docker and E2B in test_contract.py."""

from __future__ import annotations

import time

import pytest

import docker
from apps.sandboxes import (
    DockerOptions,
    ResourceLimits,
    SandboxConfig,
    SandboxManager,
    SandboxState,
    SandboxStateError,
    SandboxUnavailable,
)
from apps.sandboxes.docker import LABEL_OWNER

pytestmark = pytest.mark.docker


@pytest.fixture
def client():
    c = docker.from_env()
    yield c
    c.close()


def _exists(client, kind: str, name: str) -> bool:
    getter = {"container": client.containers, "volume": client.volumes, "network": client.networks}
    try:
        getter[kind].get(name)
    except docker.errors.NotFound:
        return False
    return True


def test_create_start_execute_destroy_leaves_nothing(manager, client):
    box = manager.create_sandbox(SandboxConfig(network_mode="isolated"))
    assert box.state is SandboxState.RUNNING and box.provider == "docker"
    assert box.id.startswith("docker-") and manager.get_sandbox(box.id) is box
    assert box.execute("echo", ["hello"]).stdout == "hello\n"
    container, volume, network = box.container_id, box.volume, box.network
    assert _exists(client, "container", container) and _exists(client, "volume", volume)
    assert network and _exists(client, "network", network)
    box.destroy()
    assert box.state is SandboxState.DESTROYED and box.end_reason == "destroyed"
    assert not _exists(client, "container", container)
    assert not _exists(client, "volume", volume)
    assert not _exists(client, "network", network)
    assert box.disk_path is None or not __import__("os").path.exists(box.disk_path)
    assert manager.get_sandbox(box.id) is None
    box.destroy()  # twice is harmless
    with pytest.raises(SandboxStateError, match="destroyed"):
        box.execute("true")


def test_engine_down_is_sandbox_unavailable(sandbox_owner):
    options = DockerOptions(base_url="unix:///nonexistent/docker.sock", api_timeout_seconds=2)
    with (
        SandboxManager(owner=sandbox_owner) as manager,
        pytest.raises(SandboxUnavailable, match="dockerd"),
    ):
        manager.create_sandbox(SandboxConfig(docker=options))


def test_reap_removes_dangling_volumes_of_the_owner(sandbox_owner, client):
    from apps.sandboxes.docker import APP_NAME, LABEL_APP

    volume = client.volumes.create(
        f"sbxv-test-{time.time_ns()}",
        labels={LABEL_APP: APP_NAME, LABEL_OWNER: sandbox_owner},
    )
    with SandboxManager(owner=sandbox_owner) as sweeper:
        sweeper.reap_orphans(grace_seconds=3600)
        assert _exists(client, "volume", volume.name), "young volumes may be mid-create"
        sweeper.reap_orphans(grace_seconds=0)
    assert not _exists(client, "volume", volume.name)


def test_impossible_cpu_request_is_a_clear_error_and_leaks_nothing(manager, client):
    from apps.sandboxes import InvalidSandboxConfig

    mine = {"label": f"{LABEL_OWNER}={manager.owner}"}
    before = {v.name for v in client.volumes.list(filters=mine)}
    with pytest.raises(InvalidSandboxConfig, match="cpu_cores=512"):
        manager.create_sandbox(SandboxConfig(limits=ResourceLimits(cpu_cores=512)))
    assert not manager.list_sandboxes()
    assert {v.name for v in client.volumes.list(filters=mine)} == before
