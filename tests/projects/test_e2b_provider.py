"""Choosing E2B for a project: allowed with the server's key or the project's own (encrypted)
E2B_API_KEY secret, refused with a message that says how otherwise."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from apps.projects import crypto, services
from apps.projects.models import Project, ProjectSecret
from tests.projects.factories import PASSWORD, make_project

KEY = "e2b_" + "1" * 40


@pytest.fixture
def no_server_key(settings):
    settings.E2B_API_KEY = None


def test_e2b_without_any_key_is_refused_with_the_way_out(alice, no_server_key):
    with pytest.raises(ValidationError) as info:
        make_project(alice, provider="e2b")
    message = " ".join(info.value.message_dict["provider"])
    assert "E2B_API_KEY" in message and "secret" in message


def test_e2b_with_the_servers_key(alice, settings):
    settings.E2B_API_KEY = KEY
    project = make_project(alice, provider="e2b")
    assert project.provider == "e2b" and project.image_or_default == "base"


def test_e2b_with_the_projects_own_key_stored_encrypted(alice, no_server_key):
    project = make_project(alice, provider="e2b", image="my-template", secrets={"E2B_API_KEY": KEY})
    secret = ProjectSecret.objects.get(project=project, name="E2B_API_KEY")
    assert KEY not in secret.ciphertext and crypto.decrypt(secret.ciphertext) == KEY
    assert project.image_or_default == "my-template"
    # The key cannot be deleted while the project relies on it...
    with pytest.raises(ValidationError):
        services.update_project(project=project, values={}, delete_secrets=["E2B_API_KEY"])
    # ...but can once the project is back on Docker.
    services.update_project(
        project=project, values={"provider": "docker"}, delete_secrets=["E2B_API_KEY"]
    )
    assert not project.secrets.exists()


def test_the_form_offers_e2b_and_explains_the_key(client, alice, no_server_key):
    client.login(username="alice", password=PASSWORD)
    page = client.get(reverse("projects:create")).content.decode()
    assert 'value="e2b"' in page and "needs a project secret E2B_API_KEY" in page
    data = {
        "name": "On E2B",
        "description": "",
        "default_kind": "script",
        "provider": "e2b",
        "image": "",
        "cpu_cores": "1",
        "memory_mb": "512",
        "disk_mb": "512",
        "timeout_seconds": "300",
        "network_mode": "none",
        "log_limit_mb": "16",
        "system_prompt": "x",
        "model": "claude-sonnet-5-5",
        "max_turns": "20",
        "max_tokens_total": "",
        "max_cost_usd": "",
        "default_commands": "echo hi",
        "env_text": "",
        "capture_text": "",
        "secrets_text": "",
    }
    refused = client.post(reverse("projects:create"), data)
    assert refused.status_code == 400 and "E2B needs an API key" in refused.content.decode()
    created = client.post(
        reverse("projects:create"), {**data, "secrets_text": f"E2B_API_KEY={KEY}"}
    )
    assert created.status_code == 302
    project = Project.objects.get(name="On E2B")
    assert project.provider == "e2b" and KEY not in client.get(created.url).content.decode()
