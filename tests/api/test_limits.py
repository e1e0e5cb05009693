"""/api/v1/limits (instance admins) and /api/v1/usage: the limits screen's rows and rules (its
own form and service), audited in the change's transaction; the usage page's numbers."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.limits import services as limit_services
from apps.limits.models import LimitPolicy
from apps.limits.selectors import effective_limits
from apps.runs import services as run_services
from apps.runs.models import Run
from tests.api.conftest import ApiClient, assert_error, make_token
from tests.teams.conftest import World

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(db, monkeypatch) -> World:
    # Saving a limit wakes queued runs; no broker needed for these tests.
    monkeypatch.setattr(run_services, "enqueue_run", lambda run_id: None)
    return World()


def api(user, scopes=("limits:write",)) -> ApiClient:
    return ApiClient(make_token(user, scopes))


def test_staff_set_every_field_of_a_team_override_and_it_binds_launches(world):
    path = f"/api/v1/limits/teams/{world.team.pk}"
    empty = api(world.staff, ["limits:read"]).get(path).json()
    assert empty["id"] is None and empty["max_memory_mb"] is None
    values = {
        "max_concurrent_runs": 3,
        "max_memory_mb": 512,
        "max_cpu_cores": 1.5,
        "max_disk_mb": 1024,
        "max_timeout_seconds": 600,
        "allowed_network_modes": ["none", "isolated"],
        "allowed_images": ["sandboxweb/*", "python:3.*"],
        "allowed_providers": ["docker"],
        "monthly_token_budget": 1_000_000,
        "monthly_cost_budget_usd": 25.5,
    }
    response = api(world.staff).patch(path, values)
    assert response.status_code == 200, response.content
    body = response.json()
    assert {k: body[k] for k in values} == {**values, "monthly_cost_budget_usd": "25.50"}
    assert (body["scope"], body["team_name"], body["updated_by"]) == ("team", "Alpha", "staff")
    event = AuditEvent.objects.get(action="limit.change")
    assert event.actor_name == "staff" and event.team_id == world.team.pk
    assert event.before is None and event.after["max_memory_mb"] == 512
    # The launch checks the same row.
    limits = effective_limits(user_id=world.member.pk, team_id=world.team.pk)
    assert limits.get("max_memory_mb").value == 512
    assert limits.team_concurrency.value == 3

    # Only the fields sent change; null clears one (it inherits again); audited before/after.
    patched = api(world.staff).patch(path, {"max_memory_mb": None, "max_disk_mb": 2048}).json()
    assert (patched["max_memory_mb"], patched["max_disk_mb"], patched["max_cpu_cores"]) == (
        None,
        2048,
        1.5,
    )
    second = AuditEvent.objects.filter(action="limit.change").order_by("-pk").first()
    assert second.before["max_memory_mb"] == 512 and second.after["max_memory_mb"] is None
    listed = api(world.staff, ["limits:read"]).get("/api/v1/limits").json()
    assert [row["team"] for row in listed["teams"]] == [world.team.pk]
    assert listed["instance"]["id"] is None and listed["ceiling"]

    assert api(world.staff).delete(path).status_code == 204
    assert not LimitPolicy.objects.filter(team=world.team).exists()
    assert AuditEvent.objects.filter(action="limit.change").count() == 3
    assert_error(api(world.staff).delete(path), 404)


def test_instance_and_user_rows(world):
    instance = api(world.staff).patch("/api/v1/limits/instance", {"max_concurrent_runs": 5})
    assert instance.status_code == 200 and instance.json()["scope"] == "instance"
    again = api(world.staff).patch("/api/v1/limits/instance", {"max_memory_mb": 1024}).json()
    assert (again["max_concurrent_runs"], again["max_memory_mb"]) == (5, 1024)
    assert LimitPolicy.objects.filter(scope="instance").count() == 1
    user_row = api(world.staff).patch("/api/v1/limits/users/MEMBER", {"monthly_token_budget": 10})
    assert user_row.json()["user"] == "member"
    read = api(world.staff, ["limits:read"]).get("/api/v1/limits/users/member").json()
    assert read["monthly_token_budget"] == 10
    assert_error(api(world.staff).get("/api/v1/limits/users/nobody"), 404)
    assert_error(api(world.staff).patch("/api/v1/limits/teams/999999", {}), 404)
    assert api(world.staff).delete("/api/v1/limits/users/member").status_code == 204
    assert AuditEvent.objects.filter(action="limit.change").count() == 4


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"max_cpu_cores": 0.05}, "max_cpu_cores"),  # the form's "at least 0.1 cores"
        ({"allowed_providers": ["kubernetes"]}, "allowed_providers"),
        ({"allowed_images": ["has space"]}, "allowed_images"),
        ({"monthly_cost_budget_usd": 1.234}, "monthly_cost_budget_usd"),
        ({"max_memory_mb": -1}, "max_memory_mb"),
        ({"max_memory_mb": "lots"}, "max_memory_mb"),
        ({"allowed_network_modes": ["host"]}, "allowed_network_modes.0"),
        ({"max_turns": 3}, "max_turns"),  # not a limits field
    ],
)
def test_invalid_values_are_400_naming_the_field_and_change_nothing(world, body, field):
    response = api(world.staff).patch(f"/api/v1/limits/teams/{world.team.pk}", body)
    assert_error(response, 400, "validation_error", field=field)
    assert not LimitPolicy.objects.exists()
    assert not AuditEvent.objects.filter(action="limit.change").exists()


def test_only_instance_admins_even_with_the_scope(world):
    for user in (world.owner, world.admin, world.member, world.viewer, world.stranger):
        client = api(user, ["limits:write"])
        assert_error(client.get("/api/v1/limits"), 403, "forbidden")
        assert_error(client.patch("/api/v1/limits/instance", {"max_memory_mb": 64}), 403)
        # 403 before the lookup: a non-admin cannot probe which teams or users exist.
        assert_error(client.patch("/api/v1/limits/teams/999999", {}), 403)
        assert_error(client.delete("/api/v1/limits/users/nobody"), 403)
    assert not LimitPolicy.objects.exists()
    assert not AuditEvent.objects.filter(action="limit.change").exists()
    # A staff token without limits:write reads but does not write.
    reader = api(world.staff, ["limits:read"])
    assert reader.get("/api/v1/limits").status_code == 200
    assert_error(reader.patch("/api/v1/limits/instance", {}), 403, "missing_scope")


def test_the_audit_entry_is_in_the_changes_transaction(world, monkeypatch):
    """If writing the entry fails after the row was saved, the change is rolled back too."""
    real_record = limit_services.record

    def record_then_fail(**kwargs):
        real_record(**kwargs)
        raise RuntimeError("audit storage failed")

    monkeypatch.setattr(limit_services, "record", record_then_fail)
    response = api(world.staff).patch("/api/v1/limits/instance", {"max_memory_mb": 256})
    assert_error(response, 500, "server_error")
    assert not LimitPolicy.objects.exists()
    assert not AuditEvent.objects.filter(action="limit.change").exists()


def test_usage_for_me_my_team_and_a_project_as_the_usage_page(world):
    run = run_services.start_run(project=world.project, user=world.member, task="x", overrides={})
    Run.objects.filter(pk=run.pk).update(total_tokens=1234, cost_usd="0.42", duration_ms=90_000)
    member = api(world.member, ["limits:read"])
    mine = member.get("/api/v1/usage").json()
    assert (mine["kind"], mine["month_runs"], mine["month_tokens"]) == ("user", 1, 1234)
    assert mine["month_cost_usd"] == "0.42" and mine["month_minutes"] == 1.5
    assert [c["title"] for c in mine["daily"]] == [
        "Runs per day",
        "Sandbox-minutes per day",
        "Tokens per day",
        "Cost per day",
    ]
    assert len(mine["daily"][0]["days"]) == 30 and mine["daily"][0]["days"][-1]["value"] == "1"
    labels = [h["label"] for h in mine["headroom"]]
    assert "Tokens this month (you)" in labels
    team = member.get("/api/v1/usage", team=world.team.pk).json()
    assert team["kind"] == "team" and "Concurrent runs (team)" in [
        h["label"] for h in team["headroom"]
    ]
    assert member.get("/api/v1/usage", project=world.project.pk).json()["month_tokens"] == 1234
    # What the page hides is 404 here too; another user's usage is for instance admins.
    assert_error(member.get("/api/v1/usage", team=world.other_team.pk), 404)
    assert_error(member.get("/api/v1/usage", project=world.private.pk), 404)
    assert_error(member.get("/api/v1/usage", user="viewer"), 404)
    staff = api(world.staff, ["limits:read"]).get("/api/v1/usage", user="member").json()
    assert staff["title"] == "User member" and staff["month_tokens"] == 1234
