"""Lifecycle against the real engine: create, start, stop, destroy, ids, attach, reaping."""

from __future__ import annotations

import time

import pytest

import docker
from apps.sandboxes import (
    DockerOptions,
    ImageNotFound,
    ResourceLimits,
    SandboxConfig,
    SandboxExists,
    SandboxManager,
    SandboxNotFound,
    SandboxState,
    SandboxStateError,
    SandboxUnavailable,
)
from apps.sandboxes.docker import LABEL_DEADLINE, LABEL_ID, LABEL_OWNER

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


def test_labels_carry_owner_id_and_deadline(manager, client, sandbox_owner):
    before = time.time()
    box = manager.create_sandbox(
        SandboxConfig(limits=ResourceLimits(timeout_seconds=90), labels={"run": "42"}), start=False
    )
    try:
        labels = client.containers.get(box.container_id).labels
        assert labels[LABEL_OWNER] == sandbox_owner and labels[LABEL_ID] == box.id
        assert labels["run"] == "42"
        assert before + 89 <= int(labels[LABEL_DEADLINE]) <= time.time() + 91
        assert box.state is SandboxState.CREATED
    finally:
        box.destroy()


def test_context_manager_always_destroys(manager, client):
    with pytest.raises(RuntimeError), manager.create_sandbox() as box:
        container = box.container_id
        raise RuntimeError("boom")
    assert box.state is SandboxState.DESTROYED
    assert not _exists(client, "container", container)


def test_stop_and_start_again_keeps_the_workspace(manager):
    with manager.create_sandbox() as box:
        box.write_file("keep.txt", "still here")
        started = time.monotonic()
        box.stop()
        assert time.monotonic() - started < 5, "init=True makes stop fast"
        assert box.state is SandboxState.STOPPED
        assert box.health_check().healthy is False
        box.start()
        assert box.read_file("keep.txt") == b"still here"


def test_deterministic_id_detects_a_duplicate_without_touching_the_first(manager, client):
    name = f"det-{manager.owner}-{time.time_ns()}"
    first = manager.create_sandbox(SandboxConfig(sandbox_id=name))
    try:
        first.write_file("marker", "first")
        with pytest.raises(SandboxExists) as info:
            manager.create_sandbox(SandboxConfig(sandbox_id=name))
        assert info.value.sandbox_id == name
        assert first.read_file("marker") == b"first"  # the original is intact
        assert first.execute("true").exit_code == 0
        volumes = client.volumes.list(filters={"label": f"{LABEL_ID}={name}"})
        assert [v.name for v in volumes] == [first.volume], "the refused create leaked a volume"
        # A second worker (a new manager, same owner) can attach instead of creating; it then
        # owns the sandbox, so closing that manager destroys it.
        with SandboxManager(owner=manager.owner) as other:
            attached = other.attach_sandbox(name)
            assert attached.state is SandboxState.RUNNING
            assert attached.limits == first.limits
            assert attached.read_file("marker") == b"first"
        assert not _exists(client, "container", first.container_id)
    finally:
        first.destroy()
    with pytest.raises(SandboxNotFound):
        manager.attach_sandbox(name)


def test_attach_refuses_other_owners(manager):
    with (
        manager.create_sandbox() as box,
        SandboxManager(owner="someone-else") as stranger,
        pytest.raises(SandboxNotFound, match="not a sandbox of owner"),
    ):
        stranger.attach_sandbox(box.id)


def test_vanished_container_reports_unhealthy_with_a_reason(manager, client):
    box = manager.create_sandbox()
    client.containers.get(box.container_id).remove(force=True)
    health = box.health_check()
    assert health.healthy is False and "no longer exists" in health.message
    reports = manager.health_check_all()
    assert any(r.id == box.id and r.health and not r.health.healthy for r in reports)
    box.destroy()  # still cleans up the volume
    assert not _exists(client, "volume", box.volume)


def test_missing_image_is_a_typed_error_and_leaks_nothing(manager, client):
    with pytest.raises(ImageNotFound, match="not present"):
        manager.create_sandbox(SandboxConfig(image="sandboxweb/does-not-exist:nope"))
    assert not manager.list_sandboxes()


def test_engine_down_is_sandbox_unavailable(sandbox_owner):
    options = DockerOptions(base_url="unix:///nonexistent/docker.sock", api_timeout_seconds=2)
    with (
        SandboxManager(owner=sandbox_owner) as manager,
        pytest.raises(SandboxUnavailable, match="dockerd"),
    ):
        manager.create_sandbox(SandboxConfig(docker=options))


def test_destroy_all_removes_everything(manager, client):
    boxes = [manager.create_sandbox() for _ in range(2)]
    boxes.append(manager.create_sandbox(start=False))
    assert len(manager.list_sandboxes()) == 3
    assert manager.destroy_all() == []
    assert manager.list_sandboxes() == []
    for box in boxes:
        assert not _exists(client, "container", box.container_id)
        assert not _exists(client, "volume", box.volume)


def test_reap_orphans_by_deadline_and_by_liveness(sandbox_owner, client):
    crashed = SandboxManager(owner=sandbox_owner)  # a worker that dies without cleaning up
    expired = crashed.create_sandbox(SandboxConfig(limits=ResourceLimits(timeout_seconds=30)))
    finished = crashed.create_sandbox(SandboxConfig(labels={"run": "done"}))
    running = crashed.create_sandbox(SandboxConfig(labels={"run": "live"}))
    with SandboxManager(owner=sandbox_owner) as sweeper:
        # Nothing is past its deadline yet and nobody says a run ended: nothing is reaped.
        assert sweeper.reap_orphans() == []
        # By deadline: pretend it is 60 s later (only the 30 s one expired).
        assert sweeper.reap_orphans(now=time.time() + 60) == [expired.id]
        # By liveness callback: the web layer knows run "done" finished.
        reaped = sweeper.reap_orphans(is_live=lambda labels: labels.get("run") != "done")
        assert reaped == [finished.id]
    for box in (expired, finished):
        assert not _exists(client, "container", box.container_id)
        assert not _exists(client, "volume", box.volume)
    assert running.execute("true").exit_code == 0
    # Sandboxes the calling manager still owns are never reaped, even if "not live".
    assert crashed.reap_orphans(is_live=lambda labels: False) == []
    crashed.close()
    assert not _exists(client, "container", running.container_id)


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
