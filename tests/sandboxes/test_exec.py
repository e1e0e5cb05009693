"""Docker-specific command execution. The provider contract (argv, streaming, caps, stdin,
timeouts that kill) runs on Docker and E2B in test_contract.py."""

from __future__ import annotations

import pytest

from apps.sandboxes import SandboxConfig

pytestmark = pytest.mark.docker


def test_config_env_applies_to_every_command_but_not_to_container_metadata(module_manager):
    config = SandboxConfig(env={"API_TOKEN": "s3cret-value"})
    with module_manager.create_sandbox(config) as box:
        assert box.execute("sh", ["-c", 'echo "$API_TOKEN"']).stdout == "s3cret-value\n"
        attrs = box.api.inspect_container(box.container_id)
        assert "s3cret-value" not in str(attrs)
