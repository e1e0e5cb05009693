"""Fixtures for the sandbox layer, which runs against the real Docker Engine.

* Every sandbox the tests create carries a per-session owner label, so concurrent test runs of
  other people on the same engine are never touched, and the session ends by asserting that
  nothing with that label is left (containers, volumes, networks).
* Every container started through ``DockerSandbox.start`` (pool threads included) is checked by
  ``apps.sandboxes.conformance`` - statically and from inside - and the test that created it
  fails if it is not hardened.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

import docker
from apps.sandboxes import ResourceLimits, SandboxConfig, SandboxManager
from apps.sandboxes.conformance import check_sandbox
from apps.sandboxes.docker import APP_NAME, LABEL_APP, LABEL_OWNER, DockerSandbox

SESSION_OWNER = f"pytest-{uuid.uuid4().hex[:10]}"
SMALL = ResourceLimits(memory_mb=256, cpu_cores=1.0, disk_mb=64, timeout_seconds=120)

_conformance_lock = threading.Lock()
_conformance_problems: list[str] = []
_checked: set[str] = set()


def leftovers(owner: str) -> dict[str, list[str]]:
    client = docker.from_env()
    try:
        labels = [f"{LABEL_APP}={APP_NAME}", f"{LABEL_OWNER}={owner}"]
        return {
            "containers": [
                c.name for c in client.containers.list(all=True, filters={"label": labels})
            ],
            "volumes": [v.name for v in client.volumes.list(filters={"label": labels})],
            "networks": [n.name for n in client.networks.list(filters={"label": labels})],
        }
    finally:
        client.close()


@pytest.fixture(scope="session")
def sandbox_owner(docker_engine) -> Iterator[str]:
    yield SESSION_OWNER
    left = leftovers(SESSION_OWNER)
    if any(left.values()):
        with SandboxManager(owner=SESSION_OWNER) as janitor:
            janitor.reap_orphans(is_live=lambda labels: False, grace_seconds=0)
        pytest.fail(f"the sandbox tests left resources behind: {left}", pytrace=False)


@pytest.fixture(autouse=True)
def _conformance_of_every_container(sandbox_owner, monkeypatch) -> Iterator[None]:
    """Run the hardening conformance check on each container right after it starts."""
    original_start = DockerSandbox.start

    def checked_start(self: DockerSandbox) -> None:
        original_start(self)
        with _conformance_lock:
            if self.container_id in _checked:
                return
            _checked.add(self.container_id)
        try:
            problems = check_sandbox(self)
        except Exception as exc:  # a sandbox killed right away by a test is fine
            running = self.state.value == "running"
            problems = [f"conformance check failed: {exc}"] if running else []
        if problems:
            with _conformance_lock:
                _conformance_problems.append(f"{self.id}: {problems}")

    monkeypatch.setattr(DockerSandbox, "start", checked_start)
    with _conformance_lock:
        _conformance_problems.clear()
    yield
    with _conformance_lock:
        found = list(_conformance_problems)
        _conformance_problems.clear()
    assert not found, f"non-conformant sandbox containers: {found}"


@pytest.fixture
def manager(sandbox_owner) -> Iterator[SandboxManager]:
    with SandboxManager(owner=sandbox_owner, limits=SMALL) as mgr:
        yield mgr


@pytest.fixture(scope="module")
def module_manager(sandbox_owner) -> Iterator[SandboxManager]:
    with SandboxManager(owner=sandbox_owner, limits=SMALL) as mgr:
        yield mgr


@pytest.fixture(scope="module")
def shared_box(module_manager) -> Iterator[DockerSandbox]:
    """One sandbox shared by the tests of a module that only read or write their own files."""
    box = module_manager.create_sandbox(SandboxConfig())
    if box.container_id not in _checked:
        problems = check_sandbox(box)
        assert not problems, problems
        _checked.add(box.container_id)
    yield box
    box.destroy()
