"""Fixtures for the agent tests: the loopback Anthropic server and an SDK client pointed at it."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest

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
