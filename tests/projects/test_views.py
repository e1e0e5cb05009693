import pytest
from django.urls import reverse

from apps.projects.models import Project, ProjectSecret
from tests.projects.factories import PASSWORD, make_project


@pytest.fixture
def as_alice(client, alice):
    client.login(username="alice", password=PASSWORD)
    return client


@pytest.fixture
def as_bob(client, bob):
    client.login(username="bob", password=PASSWORD)
    return client


def form_data(**overrides):
    data = {
        "name": "Website",
        "description": "",
        "default_kind": "agent",
        "provider": "docker",
        "image": "",
        "cpu_cores": "1",
        "memory_mb": "512",
        "disk_mb": "512",
        "timeout_seconds": "300",
        "network_mode": "none",
        "log_limit_mb": "16",
        "system_prompt": "Be careful.",
        "model": "claude-sonnet-5-5",
        "max_turns": "20",
        "max_tokens_total": "",
        "max_cost_usd": "",
        "default_commands": "",
        "env_text": "",
        "capture_text": "out/**",
        "secrets_text": "",
    }
    data.update(overrides)
    return data


def test_owner_creates_a_project_with_env_and_secret(as_alice, alice):
    response = as_alice.post(
        reverse("projects:create"),
        form_data(env_text="MODE=fast\nTOKEN=${secret:TOKEN}", secrets_text="TOKEN=abc123"),
    )
    project = Project.objects.get(owner=alice, name="Website")
    assert response.status_code == 302
    assert response["Location"] == reverse("projects:detail", args=[project.pk])
    assert project.env == {"MODE": "fast", "TOKEN": "${secret:TOKEN}"}
    assert project.capture_patterns == ["out/**"]
    assert ProjectSecret.objects.filter(project=project, name="TOKEN").exists()


def test_invalid_form_re_renders_with_messages_and_status_400(as_alice):
    response = as_alice.post(
        reverse("projects:create"),
        form_data(name="", memory_mb="999999", env_text="NOT A LINE", image="Bad Image"),
    )
    assert response.status_code == 400
    content = response.content.decode()
    assert "Please fix the highlighted fields" in content
    assert "This field is required" in content
    assert "expected NAME=value" in content
    assert "is not a Docker image reference" in content
    assert Project.objects.count() == 0


def test_service_errors_come_back_on_the_form(as_alice, alice):
    make_project(alice, name="Website")
    response = as_alice.post(reverse("projects:create"), form_data(name="website"))
    assert response.status_code == 400
    assert "already exists" in response.content.decode() or "unique" in response.content.decode()


def test_secret_values_are_never_rendered(as_alice, alice):
    project = make_project(alice, secrets={"TOKEN": "super-secret-value"})
    for url in (
        reverse("projects:detail", args=[project.pk]),
        reverse("projects:edit", args=[project.pk]),
    ):
        content = as_alice.get(url).content.decode()
        assert "TOKEN" in content
        assert "super-secret-value" not in content


def test_edit_and_archive(as_alice, alice):
    project = make_project(alice, name="Old")
    data = form_data(name="New", default_kind="script", default_commands="make test")
    response = as_alice.post(reverse("projects:edit", args=[project.pk]), data)
    assert response.status_code == 302
    project.refresh_from_db()
    assert project.name == "New" and project.default_commands == "make test"
    as_alice.post(reverse("projects:archive", args=[project.pk]))
    project.refresh_from_db()
    assert project.is_archived
    link = reverse("projects:detail", args=[project.pk])
    assert link not in as_alice.get(reverse("projects:list")).content.decode()
    assert link in as_alice.get(reverse("projects:list") + "?archived=1").content.decode()


@pytest.mark.parametrize("name", ["detail", "edit", "archive"])
def test_strangers_get_404_and_change_nothing(as_bob, alice, name):
    project = make_project(alice, name="Private")
    url = reverse(f"projects:{name}", args=[project.pk])
    response = as_bob.post(url, form_data(name="Hacked")) if name != "detail" else as_bob.get(url)
    assert response.status_code == 404
    project.refresh_from_db()
    assert project.name == "Private" and not project.is_archived


def test_strangers_do_not_see_others_projects_in_lists(as_bob, alice):
    make_project(alice, name="Private")
    assert "Private" not in as_bob.get(reverse("projects:list")).content.decode()
    assert "Private" not in as_bob.get(reverse("home")).content.decode()


@pytest.mark.parametrize(
    "name,args", [("list", []), ("create", []), ("detail", [1]), ("edit", [1])]
)
def test_anonymous_is_sent_to_login(client, db, name, args):
    response = client.get(reverse(f"projects:{name}", args=args))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
