"""The conformance checker itself: it must catch a container that is not hardened."""

from __future__ import annotations

import pytest

import docker
from apps.sandboxes.conformance import ConformanceError, assert_conformant, check_container_attrs
from apps.sandboxes.docker import APP_NAME, LABEL_APP, LABEL_OWNER

pytestmark = pytest.mark.docker


def test_a_plain_container_fails_every_relevant_check(sandbox_owner):
    client = docker.from_env()
    container = client.containers.create(
        "sandboxweb/sandbox:latest",
        user="0",
        labels={LABEL_APP: APP_NAME, LABEL_OWNER: sandbox_owner},
        volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "ro"}},
        cap_add=["NET_ADMIN"],
        security_opt=["seccomp=unconfined"],
        environment={"SECRET_KEY": "leak"},
    )
    try:
        container.reload()
        problems = " | ".join(check_container_attrs(container.attrs, image_env=[]))
        for expected in (
            "CapDrop",
            "CapAdd",
            "no-new-privileges",
            "seccomp=unconfined",
            "ReadonlyRootfs",
            "/tmp",
            "Memory limit",
            "NanoCpus",
            "PidsLimit",
            "Init",
            "bind",
            "docker.sock",
            "Config.User",
            "sandbox-id",
            "SECRET_KEY",
        ):
            assert expected in problems, expected
    finally:
        container.remove(force=True)
        client.close()


def test_a_sandbox_passes(shared_box):
    assert_conformant(shared_box)
    assert issubclass(ConformanceError, AssertionError)
