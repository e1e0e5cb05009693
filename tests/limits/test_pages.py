from __future__ import annotations

from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.limits.models import LimitPolicy
from tests.projects.factories import PASSWORD


def login(client, user):
    assert client.login(username=user.username, password=PASSWORD)


def test_staff_edit_limits_on_one_screen_and_each_change_is_audited(world, client):
    login(client, world.staff)
    assert client.get(reverse("limits:manage")).status_code == 200
    response = client.post(
        reverse("limits:manage"),
        {
            "scope": "team",
            "team": world.team.pk,
            "max_concurrent_runs": 3,
            "max_memory_mb": 512,
            "allowed_images": "sandboxweb/*\npython:3.*",
            "allowed_network_modes": ["none"],
        },
        REMOTE_ADDR="198.51.100.4",
    )
    assert response.status_code == 302
    policy = LimitPolicy.objects.get(scope="team", team=world.team)
    assert policy.allowed_images == ["sandboxweb/*", "python:3.*"]
    event = AuditEvent.objects.get(action="limit.change")
    assert event.before is None and event.after["max_concurrent_runs"] == 3
    assert event.ip == "198.51.100.4" and event.actor_name == "staff"
    client.post(
        reverse("limits:manage"),
        {
            "scope": "team",
            "team": world.team.pk,
            "max_concurrent_runs": 2,
            "max_memory_mb": 512,
            "allowed_images": "sandboxweb/*\npython:3.*",
            "allowed_network_modes": ["none"],
        },
    )
    second = AuditEvent.objects.filter(action="limit.change").order_by("-pk").first()
    assert second.before["max_concurrent_runs"] == 3 and second.after["max_concurrent_runs"] == 2
    page = client.get(reverse("limits:manage")).content.decode()
    assert "Team <a" in page and "sandboxweb/*" in page
    page = client.get(reverse("limits:manage") + f"?scope=user&username={world.member.username}")
    assert page.status_code == 200
    client.post(reverse("limits:delete", args=[policy.pk]))
    assert not LimitPolicy.objects.filter(pk=policy.pk).exists()
    assert AuditEvent.objects.filter(action="limit.change").count() == 3


def test_non_staff_get_403_and_no_audit_entry(world, client):
    for user in (world.owner, world.admin, world.member, world.viewer, world.stranger):
        login(client, user)
        assert client.get(reverse("limits:manage")).status_code == 403
        assert client.post(reverse("limits:manage"), {"max_memory_mb": 64}).status_code == 403
        client.logout()
    assert client.get(reverse("limits:manage")).status_code == 302
    assert not AuditEvent.objects.filter(action="limit.change").exists()
    assert not LimitPolicy.objects.exists()


def test_usage_page_for_me_a_team_and_a_project(world, client):
    login(client, world.member)
    for query in ("", f"?team={world.team.pk}", f"?project={world.project.pk}"):
        response = client.get(reverse("limits:usage") + query)
        assert response.status_code == 200, query
        assert b"Sandbox-minutes per day" in response.content
    assert client.get(reverse("limits:usage") + f"?team={world.other_team.pk}").status_code == 404
    assert client.get(reverse("limits:usage") + f"?project={world.private.pk}").status_code == 404


def test_the_launch_page_shows_the_limits_that_apply(world, client):
    from apps.limits import services

    services.save_policy(
        actor=None,
        scope="team",
        team=world.team,
        values={"max_memory_mb": 512, "max_concurrent_runs": 2, "monthly_token_budget": 9000},
    )
    login(client, world.member)
    page = client.get(reverse("runs:launch", args=[world.project.pk])).content.decode()
    assert "512 MB" in page and "team Alpha limit" in page
    assert "0/2" in page and "9000" in page


def test_staff_see_any_users_usage_others_only_their_own(world, client):
    login(client, world.staff)
    page = client.get(reverse("limits:usage") + "?user=member")
    assert page.status_code == 200 and b"User member" in page.content
    client.logout()
    login(client, world.viewer)
    assert client.get(reverse("limits:usage") + "?user=member").status_code == 404
