"""/api/v1/projects: the same rules as the project forms, through the same services."""

from __future__ import annotations

import pytest

from apps.projects.models import Project
from apps.projects.services import project_secret_values
from tests.api.conftest import ApiClient, assert_error
from tests.projects.factories import make_project

pytestmark = pytest.mark.django_db


def test_list_shows_own_projects_and_archived_on_request(as_alice, alice, bob, project):
    make_project(bob, name="Bob's")
    archived = make_project(alice, name="Old")
    as_alice.post(f"/api/v1/projects/{archived.pk}/archive")
    assert [p["name"] for p in as_alice.get("/api/v1/projects").json()["items"]] == ["Demo"]
    listed = as_alice.get("/api/v1/projects", archived="true").json()["items"]
    assert [(p["name"], p["archived"]) for p in listed] == [("Old", True)]


def test_create_read_and_secrets_are_write_only(as_alice, alice):
    response = as_alice.post(
        "/api/v1/projects",
        {
            "name": "API made",
            "default_kind": "script",
            "default_commands": "make test",
            "memory_mb": 512,
            "env": {"TOKEN": "${secret:TOKEN}", "MODE": "ci"},
            "capture_patterns": ["out/**"],
            "secrets": {"TOKEN": "s3cret-value"},
            "max_cost_usd": "1.50",
        },
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["owner"] == "alice" and body["memory_mb"] == 512 and body["cpu_cores"] == 1.0
    assert [s["name"] for s in body["secrets"]] == ["TOKEN"]
    assert b"s3cret-value" not in response.content
    project = Project.objects.get(pk=body["id"])
    assert project_secret_values(project_id=project.pk) == {"TOKEN": "s3cret-value"}
    again = as_alice.get(f"/api/v1/projects/{project.pk}")
    assert again.json() == body


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x", "memory_mb": 10}, "memory_mb"),
        ({"name": "x", "memory_mb": "lots"}, "memory_mb"),
        ({"name": "x", "image": "Not An Image!"}, "image"),
        ({"name": "x", "env": {"A": "${secret:MISSING}"}}, "env"),
        ({"name": "x", "env": {"PATH": "/bin"}}, "env"),
        ({"name": "x", "capture_patterns": ["../etc"]}, "capture_patterns"),
        ({"name": "x", "provider": "nowhere"}, "provider"),
        ({"name": "x", "network_mode": "wide-open"}, "network_mode"),
        ({"name": "x", "secrets": {"1BAD": "v"}}, None),
        ({"name": "x", "surprise": 1}, "surprise"),
        ({"name": "Demo"}, None),  # names are unique per owner
        ({"name": "x\u0000y"}, "name"),
    ],
)
def test_invalid_projects_are_400_naming_the_field(as_alice, project, payload, field):
    error = assert_error(as_alice.post("/api/v1/projects", payload), 400, "validation_error")
    if field is not None:
        assert error["field"] == field, error
    assert Project.objects.count() == 1


def test_patch_changes_only_what_is_sent(as_alice, project):
    response = as_alice.patch(
        f"/api/v1/projects/{project.pk}",
        {"description": "now with docs", "secrets": {"KEY": "v"}, "max_tokens_total": 5000},
    )
    assert response.status_code == 200, response.content
    project.refresh_from_db()
    assert project.description == "now with docs" and project.name == "Demo"
    assert project.memory_mb == 256 and project.max_tokens_total == 5000
    assert [s["name"] for s in response.json()["secrets"]] == ["KEY"]
    response = as_alice.patch(
        f"/api/v1/projects/{project.pk}", {"delete_secrets": ["KEY"], "max_tokens_total": None}
    )
    assert response.json()["secrets"] == [] and response.json()["max_tokens_total"] is None


def test_a_failed_patch_changes_nothing(as_alice, project):
    error = assert_error(
        as_alice.patch(f"/api/v1/projects/{project.pk}", {"name": "New", "cpu_cores": 99}), 400
    )
    assert error["field"] == "cpu_cores"
    project.refresh_from_db()
    assert project.name == "Demo"


def test_archive_and_restore(as_alice, project):
    archived = as_alice.post(f"/api/v1/projects/{project.pk}/archive").json()
    assert archived["archived"] and archived["archived_at"]
    launch = as_alice.post("/api/v1/runs", {"project": project.pk, "task": "echo"})
    assert_error(launch, 409, "conflict")
    restored = as_alice.post(f"/api/v1/projects/{project.pk}/restore").json()
    assert not restored["archived"]


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("PATCH", ""), ("POST", "/archive"), ("POST", "/restore")],
)
def test_strangers_get_404_like_for_nothing(as_bob, project, method, suffix):
    mine = as_bob.request(method, f"/api/v1/projects/{project.pk}{suffix}", {"name": "taken"})
    nothing = as_bob.request(method, f"/api/v1/projects/999999{suffix}", {"name": "taken"})
    assert_error(mine, 404, "not_found")
    assert mine.json() == nothing.json()
    project.refresh_from_db()
    assert project.name == "Demo" and not project.is_archived


def test_anonymous_gets_401(project):
    assert_error(ApiClient().get(f"/api/v1/projects/{project.pk}"), 401)
    assert_error(ApiClient().post("/api/v1/projects", {"name": "x"}), 401)
