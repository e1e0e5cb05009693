"""Teams: visibility by membership, roles, invitations, removal (and its audit trail)."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.projects.selectors import list_projects_for_user, projects_visible_to
from apps.runs import services as run_services
from apps.runs.selectors import runs_visible_to
from apps.teams import services
from apps.teams.models import Invitation, Membership
from tests.projects.factories import PASSWORD


def login(client, user):
    assert client.login(username=user.username, password=PASSWORD)
    return client


def test_team_projects_and_their_runs_are_visible_to_every_member(world):
    run = run_services.start_run(
        project=world.project, user=world.member, task="echo hi", overrides={}
    )
    for user in (world.owner, world.admin, world.member, world.viewer):
        assert world.project in projects_visible_to(user)
        assert run in runs_visible_to(user)
    assert world.project not in projects_visible_to(world.stranger)
    assert run not in runs_visible_to(world.stranger)
    assert world.private not in projects_visible_to(world.member)
    # A subquery, not a join: counts are not multiplied by the number of members.
    listed = {p.name: p.run_count for p in list_projects_for_user(user=world.owner)}
    assert listed == {"Private": 0, "Shared": 1}


def test_a_viewer_cannot_launch_and_a_member_cannot_edit(world, client):
    with pytest.raises(PermissionDenied):
        run_services.start_run(project=world.project, user=world.viewer, task="x", overrides={})
    login(client, world.viewer)
    response = client.post(
        reverse("runs:launch", args=[world.project.pk]), {"kind": "script", "task": "echo"}
    )
    assert response.status_code == 403
    client.logout()
    login(client, world.member)
    assert client.get(reverse("projects:edit", args=[world.project.pk])).status_code == 403
    assert client.get(reverse("projects:detail", args=[world.project.pk])).status_code == 200
    client.logout()
    login(client, world.admin)
    assert client.get(reverse("projects:edit", args=[world.project.pk])).status_code == 200


def test_a_forged_team_id_in_the_project_form_is_a_404_and_a_viewer_team_a_403(world, client):
    login(client, world.member)
    values = {
        "name": "Mine",
        "default_kind": "script",
        "provider": "docker",
        "cpu_cores": 1,
        "memory_mb": 256,
        "disk_mb": 256,
        "timeout_seconds": 60,
        "network_mode": "none",
        "log_limit_mb": 16,
        "model": "m",
        "max_turns": 3,
        "default_commands": "echo",
    }
    assert (
        client.post(reverse("projects:create"), {**values, "team": world.other_team.pk}).status_code
        == 404
    )
    assert client.post(reverse("projects:create"), {**values, "team": 999999}).status_code == 404
    client.logout()
    login(client, world.viewer)
    assert (
        client.post(reverse("projects:create"), {**values, "team": world.team.pk}).status_code
        == 403
    )
    client.logout()
    login(client, world.member)
    response = client.post(reverse("projects:create"), {**values, "team": world.team.pk})
    assert response.status_code == 302
    project = world.team.projects.get(name="Mine")
    assert AuditEvent.objects.filter(
        action="project.team_change", target_id=str(project.pk)
    ).exists()


def test_invite_by_username_or_email_then_accept_or_decline(world, client):
    newbie = __import__("tests.projects.factories", fromlist=["make_user"]).make_user(
        "newbie", email="New.Bie@example.test"
    )
    login(client, world.admin)
    response = client.post(
        reverse("teams:invite", args=[world.team.pk]),
        {"who": "new.bie@EXAMPLE.test", "role": "viewer"},
    )
    assert response.status_code == 302
    invitation = Invitation.objects.get(user=newbie, status="pending")
    assert invitation.role == "viewer"
    # admins cannot hand out ownership
    response = client.post(
        reverse("teams:invite", args=[world.team.pk]), {"who": "stranger", "role": "owner"}
    )
    assert response.status_code == 403
    client.logout()
    # someone else cannot answer newbie's invitation
    login(client, world.member)
    url = reverse("teams:invitation_respond", args=[invitation.pk])
    assert client.post(url, {"decision": "accept"}).status_code == 404
    client.logout()
    login(client, newbie)
    assert world.project not in projects_visible_to(newbie)
    client.post(url, {"decision": "accept"})
    assert Membership.objects.get(team=world.team, user=newbie).role == "viewer"
    assert world.project in projects_visible_to(newbie)
    assert AuditEvent.objects.filter(action="team.invite").count() == 1
    assert AuditEvent.objects.filter(action="team.invite_accept").count() == 1
    # decline path
    services.invite(
        team=world.team, actor=world.owner, actor_role="owner", who="stranger", role="member"
    )
    declined = Invitation.objects.get(user=world.stranger, status="pending")
    services.decline_invitation(invitation=declined, user=world.stranger)
    assert not Membership.objects.filter(team=world.team, user=world.stranger).exists()


def test_unknown_invitee_gets_one_message_for_none_or_many(world):
    with pytest.raises(ValidationError, match="No single user"):
        services.invite(
            team=world.team, actor=world.owner, actor_role="owner", who="nobody", role="member"
        )


def test_role_rules_and_the_last_owner(world):
    with pytest.raises(PermissionDenied):
        services.change_role(
            membership=world.membership(world.owner),
            actor=world.admin,
            actor_role="admin",
            role="member",
        )
    with pytest.raises(PermissionDenied):
        services.change_role(
            membership=world.membership(world.viewer),
            actor=world.member,
            actor_role="member",
            role="admin",
        )
    with pytest.raises(ValidationError, match="at least one owner"):
        services.change_role(
            membership=world.membership(world.owner),
            actor=world.owner,
            actor_role="owner",
            role="admin",
        )
    services.change_role(
        membership=world.membership(world.viewer),
        actor=world.admin,
        actor_role="admin",
        role="member",
    )
    event = AuditEvent.objects.get(action="team.role_change")
    assert (event.before, event.after, event.actor_name) == (
        {"role": "viewer"},
        {"role": "member"},
        "tadmin",
    )
    with pytest.raises(ValidationError, match="at least one owner"):
        services.remove_member(
            membership=world.membership(world.owner), actor=world.owner, actor_role="owner"
        )


def test_removing_a_member_hides_the_team_and_is_audited(world, client):
    login(client, world.admin)
    url = reverse("teams:member_remove", args=[world.team.pk, world.membership(world.member).pk])
    assert client.post(url, REMOTE_ADDR="203.0.113.7").status_code == 302
    assert world.project not in projects_visible_to(world.member)
    event = AuditEvent.objects.get(action="team.member_remove")
    assert event.ip == "203.0.113.7" and event.before == {"user": "member", "role": "member"}
    client.logout()
    login(client, world.viewer)
    url = reverse("teams:member_remove", args=[world.team.pk, world.membership(world.admin).pk])
    assert client.post(url).status_code == 403
    client.logout()
    login(client, world.stranger)
    assert client.get(reverse("teams:detail", args=[world.team.pk])).status_code == 404


def test_team_pages_render(world, client):
    login(client, world.owner)
    assert b"Alpha" in client.get(reverse("teams:list")).content
    page = client.get(reverse("teams:detail", args=[world.team.pk]))
    assert page.status_code == 200 and b"Send invitation" in page.content
    client.logout()
    login(client, world.viewer)
    page = client.get(reverse("teams:detail", args=[world.team.pk]))
    assert page.status_code == 200 and b"Send invitation" not in page.content


def test_viewers_do_not_see_launch_and_cancel_buttons(world, client, monkeypatch):
    monkeypatch.setattr(run_services, "enqueue_run", lambda run_id: None)
    run = run_services.start_run(
        project=world.project, user=world.member, task="echo", overrides={}
    )
    login(client, world.viewer)
    page = client.get(reverse("runs:detail", args=[run.pk])).content.decode()
    assert "read only" in page and 'data-testid="cancel"' not in page
    project_page = client.get(reverse("projects:detail", args=[world.project.pk])).content.decode()
    assert "Launch run" not in project_page and ">Edit<" not in project_page
    client.logout()
    login(client, world.member)
    page = client.get(reverse("runs:detail", args=[run.pk])).content.decode()
    assert 'data-testid="cancel"' in page and "Re-run" in page


def test_two_people_creating_the_same_team_name_at_once_get_a_form_error_not_a_500(
    world, monkeypatch
):
    """The name check and the insert race: the loser's insert hits the unique constraint.
    Forcing the check to miss reproduces the loser's view of the race deterministically."""
    from django.db.models import QuerySet

    from apps.teams.models import Team

    monkeypatch.setattr(QuerySet, "exists", lambda self: False)
    with pytest.raises(ValidationError) as raised:
        services.create_team(user=world.member, name="alpha")
    assert raised.value.message_dict == {"name": ["A team called alpha already exists."]}
    assert Team.objects.filter(name__iexact="alpha").count() == 1
    assert not world.member.team_memberships.exclude(team=world.team).exists()
