"""/api/v1/audit: the audit page's filters (its own form), keyset pages, and the CSV export
byte for byte equal to the page's download; instance admins only."""

from __future__ import annotations

import csv
import io

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.audit.services import record
from tests.api.conftest import ApiClient, assert_error, make_token
from tests.teams.conftest import World

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(db) -> World:
    w = World()
    # A few entries of our own, with cells a spreadsheet would run as formulas.
    for index in range(7):
        with transaction.atomic():
            record(
                actor=w.owner,
                action="team.role_change",
                target_type="teams.membership",
                target_id=str(index),
                target_repr=f"=HYPERLINK(x) {index}",
                team_id=w.team.pk,
                before={"role": "viewer"},
                after={"role": "member"},
            )
    return w


def api(user, scopes=("audit:read",)) -> ApiClient:
    return ApiClient(make_token(user, scopes))


def test_pages_by_cursor_newest_first_without_gaps_or_repeats(world):
    staff = api(world.staff)
    expected = list(AuditEvent.objects.order_by("-at", "-pk").values_list("pk", flat=True))
    assert len(expected) >= 9  # the world's own entries and our seven
    seen, cursor, pages = [], None, []
    while True:
        body = staff.get("/api/v1/audit", limit=4, cursor=cursor).json()
        pages.append(body)
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    sizes = [len(p["items"]) for p in pages]
    assert seen == expected and sizes[:-1] == [4] * (len(sizes) - 1) and 1 <= sizes[-1] <= 4
    assert pages[0]["prev_cursor"] is None
    # Back from the last page to the one before it.
    back = staff.get("/api/v1/audit", limit=4, before=pages[-1]["prev_cursor"]).json()
    assert [item["id"] for item in back["items"]] == [item["id"] for item in pages[-2]["items"]]
    first = pages[0]["items"][0]
    assert first["actor"] == "owner" and first["after"] == {"role": "member"}


def test_filters_are_the_pages(world):
    staff = api(world.staff)
    changes = staff.get("/api/v1/audit", action="team.role_change", actor="OWNER").json()
    assert len(changes["items"]) == 7
    by_target = staff.get("/api/v1/audit", target_type="teams.membership", target_id="3").json()
    assert [item["target"] for item in by_target["items"]] == ["=HYPERLINK(x) 3"]
    other_team = staff.get("/api/v1/audit", team=world.other_team.pk).json()["items"]
    assert [item["action"] for item in other_team] == ["team.create"]
    today = timezone.localdate(AuditEvent.objects.first().at).isoformat()
    on_day = staff.get("/api/v1/audit", date_from=today, date_to=today).json()["items"]
    assert len(on_day) == AuditEvent.objects.count()
    assert staff.get("/api/v1/audit", date_to="2000-01-01").json()["items"] == []
    # The page's form refuses these; the API names the field.
    assert_error(staff.get("/api/v1/audit", action="made.up"), 400, field="action")
    assert_error(staff.get("/api/v1/audit", date_from="yesterday"), 400, field="date_from")
    assert_error(staff.get("/api/v1/audit", cursor="not-a-cursor"), 400, field="cursor")
    assert_error(staff.get("/api/v1/audit", limit=0), 400, field="limit")


def test_the_csv_export_equals_the_pages_download(world, client):
    query = {"action": "team.role_change"}
    api_csv = api(world.staff).get("/api/v1/audit/export.csv", **query)
    assert api_csv.status_code == 200
    assert api_csv["Content-Type"].startswith("text/csv")
    assert "attachment" in api_csv["Content-Disposition"]
    browser = Client()
    browser.force_login(world.staff)
    page_csv = browser.get("/audit/export.csv", query)
    body = b"".join(api_csv.streaming_content)
    assert body == b"".join(page_csv.streaming_content)
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert rows[0] == [
        "at",
        "actor",
        "action",
        "target_type",
        "target_id",
        "target",
        "team_id",
        "ip",
        "user_agent",
        "before",
        "after",
    ]
    assert len(rows) == 8 and rows[1][5].startswith("'=")  # formulas are defused
    assert_error(api(world.staff).get("/api/v1/audit/export.csv", team=0), 400, field="team")


def test_only_instance_admins_read_the_log(world):
    for user in (world.owner, world.admin, world.member, world.viewer, world.stranger):
        client = api(user)
        assert_error(client.get("/api/v1/audit"), 403, "forbidden")
        assert_error(client.get("/api/v1/audit/export.csv"), 403, "forbidden")
    assert_error(api(world.staff, ["runs:read"]).get("/api/v1/audit"), 403, "missing_scope")
    assert_error(ApiClient().get("/api/v1/audit"), 401)
