"""The API and the UI answer every role the same way: one authorization matrix.

For each role in a team project (owner, admin, member, viewer), a stranger, an instance admin
outside the team (staff) and anonymous, each action is done once through the UI (session) and
once through the API (an all-scopes token of the same user), and both must land in the same
class: done, forbidden (403), hidden (404), or "log in" (the UI's redirect, the API's 401).
The API's request is rolled back before the UI's, so both start from the same state.
"""

from __future__ import annotations

import pytest
from django.db import transaction
from django.test import Client

from apps.runs import services as run_services
from apps.runs.models import Run
from apps.teams import services as team_services
from apps.teams.models import Membership
from tests.api.conftest import ApiClient, make_token
from tests.projects.factories import make_project, make_user

pytestmark = pytest.mark.django_db
ROLES = ("owner", "admin", "member", "viewer", "stranger", "staff", "anonymous")


@pytest.fixture
def world(db):
    users = {
        name: make_user(name, is_staff=name == "staff") for name in ROLES if name != "anonymous"
    }
    team = team_services.create_team(user=users["owner"], name="Alpha")
    for name in ("admin", "member", "viewer"):
        Membership.objects.create(team=team, user=users[name], role=name)
    project = make_project(users["owner"], name="Shared", team=team)
    run = run_services.start_run(project=project, user=users["owner"], task="echo", overrides={})
    extra = Membership.objects.create(team=team, user=make_user("extra"), role="member")
    make_user("outsider")
    make_user("newbie")
    invitation = team_services.invite(
        team=team, actor=users["owner"], actor_role="owner", who="newbie", role="member"
    )
    ids = {"p": project.pk, "r": run.pk, "t": team.pk, "m": extra.pk, "i": invitation.pk}
    return users, project, run, ids


def outcome(response, *, api: bool) -> str:
    status = response.status_code
    if status == 401 or (not api and status == 302 and "/login/" in response["Location"]):
        return "login"
    if status in (403, 404):
        return {403: "forbidden", 404: "hidden"}[status]
    assert status < 400, (status, response.content[:300])
    return "done"


# action -> (UI method, UI path, UI data, API method, API path, API body)
ACTIONS = {
    "read project": ("get", "/projects/{p}/", None, "GET", "/api/v1/projects/{p}", None),
    "edit project": (
        "get",
        "/projects/{p}/edit/",
        None,
        "PATCH",
        "/api/v1/projects/{p}",
        {"description": "edited"},
    ),
    "archive project": (
        "post",
        "/projects/{p}/archive/",
        {},
        "POST",
        "/api/v1/projects/{p}/archive",
        None,
    ),
    "launch": (
        "post",
        "/runs/new/{p}/",
        {"kind": "script", "task": "echo hi"},
        "POST",
        "/api/v1/runs",
        {"project": "{p}", "kind": "script", "task": "echo hi"},
    ),
    "read run": ("get", "/runs/{r}/", None, "GET", "/api/v1/runs/{r}", None),
    "cancel run": ("post", "/runs/{r}/cancel/", {}, "POST", "/api/v1/runs/{r}/cancel", None),
    "rerun": ("post", "/runs/{r}/rerun/", {}, "POST", "/api/v1/runs/{r}/rerun", None),
    "comment": (
        "post",
        "/review/runs/{r}/comments/",
        {"body": "looks good"},
        "POST",
        "/api/v1/runs/{r}/comments",
        {"body": "looks good"},
    ),
    "verdict": (
        "post",
        "/review/runs/{r}/verdict/",
        {"verdict": "approved"},
        "PUT",
        "/api/v1/runs/{r}/verdict",
        {"verdict": "approved"},
    ),
    "label": (
        "post",
        "/review/runs/{r}/labels/",
        {"label": "flaky"},
        "POST",
        "/api/v1/runs/{r}/labels",
        {"label": "flaky"},
    ),
    "assign reviewer": (
        "post",
        "/review/runs/{r}/assign/",
        {"reviewer": "member"},
        "PUT",
        "/api/v1/runs/{r}/reviewer",
        {"reviewer": "member"},
    ),
    "share link": (
        "post",
        "/review/runs/{r}/share/",
        {"days": "7"},
        "POST",
        "/api/v1/runs/{r}/share-links",
        {"days": 7},
    ),
    "team members": (
        "get",
        "/teams/{t}/",
        None,
        "GET",
        "/api/v1/teams/{t}/members",
        None,
    ),
    "invite": (
        "post",
        "/teams/{t}/invite/",
        {"who": "outsider", "role": "member"},
        "POST",
        "/api/v1/teams/{t}/invitations",
        {"who": "outsider", "role": "member"},
    ),
    "change role": (
        "post",
        "/teams/{t}/members/{m}/role/",
        {"role": "viewer"},
        "PATCH",
        "/api/v1/teams/{t}/members/{m}",
        {"role": "viewer"},
    ),
    "remove member": (
        "post",
        "/teams/{t}/members/{m}/remove/",
        {},
        "DELETE",
        "/api/v1/teams/{t}/members/{m}",
        None,
    ),
    "cancel invitation": (
        "post",
        "/teams/{t}/invitations/{i}/revoke/",
        {},
        "POST",
        "/api/v1/teams/{t}/invitations/{i}/revoke",
        None,
    ),
    "team usage": (
        "get",
        "/limits/usage/?team={t}",
        None,
        "GET",
        "/api/v1/usage?team={t}",
        None,
    ),
    "read limits": ("get", "/limits/", None, "GET", "/api/v1/limits", None),
    "set team limits": (
        "post",
        "/limits/",
        {"scope": "team", "team": "{t}", "max_memory_mb": "1024"},
        "PATCH",
        "/api/v1/limits/teams/{t}",
        {"max_memory_mb": 1024},
    ),
    "read audit log": ("get", "/audit/", None, "GET", "/api/v1/audit", None),
    "export audit log": (
        "get",
        "/audit/export.csv",
        None,
        "GET",
        "/api/v1/audit/export.csv",
        None,
    ),
}
TEAM = {"owner", "admin", "member", "viewer"}
MANAGE = {"owner", "admin"}
# Instance-admin actions: staff do them; everyone else, in the team or not, gets 403.
STAFF_ONLY = {"read limits", "set team limits", "read audit log", "export audit log"}
EXPECTED = {
    "read project": {"owner", "admin", "member", "viewer"},
    "edit project": {"owner", "admin"},
    "archive project": {"owner", "admin"},
    "launch": {"owner", "admin", "member"},
    "read run": {"owner", "admin", "member", "viewer"},
    "cancel run": {"owner", "admin", "member"},
    "rerun": {"owner", "admin", "member"},
    "comment": {"owner", "admin", "member"},
    "verdict": {"owner", "admin", "member"},
    "label": {"owner", "admin", "member"},
    "assign reviewer": {"owner", "admin", "member"},
    "share link": {"owner", "admin"},
    "team members": TEAM,
    "invite": MANAGE,
    "change role": MANAGE,
    "remove member": MANAGE,
    "cancel invitation": MANAGE,
    "team usage": TEAM,
    **{action: {"staff"} for action in STAFF_ONLY},
}


def _fill(value, ids):
    if isinstance(value, str):
        text = value.format(**ids)
        return int(text) if text.isdigit() else text
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


def expected(role: str, action: str) -> str:
    if role == "anonymous":
        return "login"
    if role in EXPECTED[action]:
        return "done"
    if action in STAFF_ONLY:
        return "forbidden"
    return "hidden" if role in {"stranger", "staff"} else "forbidden"


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("role", ROLES)
def test_the_api_and_the_ui_share_one_authorization_matrix(world, role, action):
    users, project, run, ids = world
    ui_method, ui_path, ui_data, api_method, api_path, api_body = ACTIONS[action]
    user = users.get(role)

    api = ApiClient(make_token(user) if user else None)
    with transaction.atomic():
        api_outcome = outcome(
            api.request(api_method, _fill(api_path, ids), _fill(api_body, ids)), api=True
        )
        transaction.set_rollback(True)
    Run.objects.filter(pk=run.pk).update(status=Run.Status.QUEUED)
    project.refresh_from_db()
    if project.is_archived:
        project.archived_at = None
        project.save()

    browser = Client()
    if user:
        browser.force_login(user)
    path = _fill(ui_path, ids)
    response = (
        getattr(browser, ui_method)(path, _fill(ui_data, ids))
        if ui_data is not None
        else getattr(browser, ui_method)(path)
    )
    ui_outcome = outcome(response, api=False)

    assert (api_outcome, ui_outcome) == (expected(role, action),) * 2
