"""Fixtures for the agent tests: the loopback Anthropic server and an SDK client pointed at it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import anthropic
import pytest

import docker
from apps.sandboxes import ResourceLimits, SandboxManager
from apps.sandboxes.docker import APP_NAME, LABEL_APP, LABEL_OWNER
from tests.support.anthropic_server import AnthropicServer


@pytest.fixture
def anthropic_server() -> Iterator[AnthropicServer]:
    with AnthropicServer() as server:
        yield server


@pytest.fixture
def anthropic_client(anthropic_server: AnthropicServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="test-key", base_url=anthropic_server.base_url, max_retries=0
    )


AGENT_TEST_OWNER = f"pytest-agents-{uuid.uuid4().hex[:8]}"
SMALL = ResourceLimits(memory_mb=256, cpu_cores=0.5, disk_mb=64, timeout_seconds=120)


def _leftover_containers(owner: str) -> list[str]:
    client = docker.from_env()
    try:
        labels = [f"{LABEL_APP}={APP_NAME}", f"{LABEL_OWNER}={owner}"]
        return [c.name for c in client.containers.list(all=True, filters={"label": labels})]
    finally:
        client.close()


@pytest.fixture(scope="session")
def agent_sandbox_owner(docker_engine) -> Iterator[str]:
    """A per-session owner label; the session fails if any sandbox of it is left behind."""
    yield AGENT_TEST_OWNER
    left = _leftover_containers(AGENT_TEST_OWNER)
    if left:
        with SandboxManager(owner=AGENT_TEST_OWNER) as janitor:
            janitor.reap_orphans(is_live=lambda labels: False, grace_seconds=0)
        pytest.fail(f"the agent tests left sandboxes behind: {left}", pytrace=False)


@pytest.fixture
def docker_manager(agent_sandbox_owner) -> Iterator[SandboxManager]:
    with SandboxManager(owner=agent_sandbox_owner, limits=SMALL) as manager:
        yield manager
        assert manager.list_sandboxes() == [], "a run left its sandbox registered"
