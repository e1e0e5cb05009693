from __future__ import annotations

import csv
import io

import pytest
from django.db import transaction
from django.urls import reverse

from apps.audit.models import AuditEvent, AuditLogIsAppendOnly
from apps.audit.services import record
from apps.projects import services as project_services
from apps.runs import services as run_services
from tests.projects.factories import PASSWORD


def login(client, user):
    assert client.login(username=user.username, password=PASSWORD)


def test_entries_cannot_be_changed_or_deleted(world):
    event = AuditEvent.objects.first()
    event.action = "forged"
    with pytest.raises(AuditLogIsAppendOnly):
        event.save()
    with pytest.raises(AuditLogIsAppendOnly):
        event.delete()
    with pytest.raises(AuditLogIsAppendOnly):
        AuditEvent.objects.filter(pk=event.pk).update(action="x")
    with pytest.raises(AuditLogIsAppendOnly):
        AuditEvent.objects.all().delete()


def test_record_outside_a_transaction_is_refused(transactional_db):
    with pytest.raises(RuntimeError):
        record(actor=None, action="x")


def test_a_rolled_back_change_leaves_no_entry(world):
    before = AuditEvent.objects.count()
    with pytest.raises(ValueError), transaction.atomic():
        project_services.update_project(
            project=world.project, values={}, set_secrets={"TOKEN": "s3cret"}, actor=world.owner
        )
        raise ValueError("boom")
    assert AuditEvent.objects.count() == before


def test_secret_changes_launch_and_cancel_are_audited_without_values(world):
    project_services.update_project(
        project=world.project, values={}, set_secrets={"TOKEN": "s3cret-value"}, actor=world.admin
    )
    project_services.update_project(
        project=world.project, values={}, delete_secrets=["TOKEN"], actor=world.admin
    )
    set_event = AuditEvent.objects.get(action="secret.set")
    assert set_event.after["name"] == "TOKEN" and "s3cret" not in str(set_event.after)
    assert AuditEvent.objects.get(action="secret.delete").before["name"] == "TOKEN"
    run = run_services.start_run(
        project=world.project, user=world.member, task="echo", overrides={"memory_mb": 128}
    )
    launch = AuditEvent.objects.get(action="run.launch")
    assert (
        launch.target_id == str(run.pk)
        and launch.after["memory_mb"] == 128
        and launch.team_id == world.team.pk
    )
    run_services.cancel_run(run=run, user=world.member)
    cancel = AuditEvent.objects.get(action="run.cancel")
    assert cancel.before == {"status": "queued"} and cancel.after == {"status": "cancelled"}


def test_admins_filter_and_export_csv(world, client):
    login(client, world.staff)
    page = client.get(reverse("audit:list") + "?action=team.create")
    assert page.status_code == 200 and b"team.create" in page.content
    response = client.get(reverse("audit:export") + "?action=team.create")
    assert response["Content-Disposition"].startswith("attachment")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert {row["action"] for row in rows} == {"team.create"} and len(rows) == 2
    client.logout()
    login(client, world.owner)
    assert client.get(reverse("audit:list")).status_code == 403
    assert client.get(reverse("audit:export")).status_code == 403


def test_the_django_admin_cannot_change_or_delete_entries(world, client):
    from tests.projects.factories import make_user

    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    event = AuditEvent.objects.first()
    assert client.get(f"/admin/audit/auditevent/{event.pk}/change/").status_code == 200
    assert (
        client.post(f"/admin/audit/auditevent/{event.pk}/change/", {"action": "x"}).status_code
        == 403
    )
    assert (
        client.post(f"/admin/audit/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert AuditEvent.objects.get(pk=event.pk).action == event.action
