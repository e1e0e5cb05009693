"""Fixtures for the sandbox layer, which runs against the real Docker Engine.

* Every sandbox the tests create carries a per-session owner label, so concurrent test runs of
  other people on the same engine are never touched, and the session ends by asserting that
  nothing with that label is left (containers, volumes, networks).
* Every container started through ``DockerSandbox.start`` (pool threads included) is checked by
  ``apps.sandboxes.conformance`` - statically and from inside - and the test that created it
  fails if it is not hardened. That includes the containers behind the loopback E2B server.
* ``e2b_server`` is one loopback E2B server for the session (tests/support/e2b_server.py); the
  E2B provider reaches it through explicit ``E2BOptions(api_url=, sandbox_url=)``, so no test
  depends on ``E2B_*`` environment variables. It must have no live sandbox left at the end.
* ``provider`` parametrises the provider-contract tests (test_contract.py) over Docker and E2B.
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
from tests.support.e2b_server import E2BServer, ensure_no_proxy, loopback_options

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


# -- E2B (loopback) ---------------------------------------------------------------------------
PROVIDERS = ("docker", "e2b")


@pytest.fixture(scope="session")
def e2b_server(sandbox_owner) -> Iterator[E2BServer]:
    ensure_no_proxy()
    with E2BServer(owner=sandbox_owner) as server:
        yield server
        left = server.live()
    if left:
        pytest.fail(f"the E2B tests left sandboxes behind: {left}", pytrace=False)


def make_manager(provider: str, owner: str, server: E2BServer | None, **kwargs) -> SandboxManager:
    """A manager for ``provider``; E2B ones talk to ``server``."""
    kwargs.setdefault("limits", SMALL)
    if provider == "e2b":
        assert server is not None
        kwargs["provider_options"] = {"e2b": {"options": loopback_options(server)}}
    return SandboxManager(provider=provider, owner=owner, **kwargs)


@pytest.fixture(scope="module", params=PROVIDERS)
def provider(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def provider_server(provider, request) -> E2BServer | None:
    return request.getfixturevalue("e2b_server") if provider == "e2b" else None


@pytest.fixture(scope="module")
def contract_manager(provider, provider_server, sandbox_owner) -> Iterator[SandboxManager]:
    with make_manager(provider, sandbox_owner, provider_server) as mgr:
        yield mgr


@pytest.fixture
def fresh_manager(provider, provider_server, sandbox_owner) -> Iterator[SandboxManager]:
    with make_manager(provider, sandbox_owner, provider_server) as mgr:
        yield mgr


@pytest.fixture(scope="module")
def box(contract_manager):
    """One sandbox per provider shared by the contract tests that only touch their own files.
    Long-lived, so a reaping test that pretends it is later never sees it expired."""
    sandbox = contract_manager.create_sandbox(
        SandboxConfig(limits=ResourceLimits(timeout_seconds=1800))
    )
    yield sandbox
    sandbox.destroy()
