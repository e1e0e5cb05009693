"""The authorization matrix: every URL of the site, as every kind of user.

Roles: the project's owner (also team owner), a team admin, a team member, a team viewer, a
stranger (member of another team), an instance admin outside the team (staff) and anonymous.
The list of URLs comes from the URLconf itself: a new view without a row here (or an explicit,
reasoned exemption) fails ``test_every_url_has_a_rule``.

Each request runs in a savepoint that is rolled back, so one role's POST does not change what
the next role sees.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from apps.limits import services as limit_services
from apps.reviews import services as review_services
from apps.runs import services as run_services
from apps.runs.models import Artifact
from apps.teams import services as team_services
from apps.teams.models import Membership
from tests.projects.factories import make_user

ROLES = ("owner", "admin", "member", "viewer", "stranger", "staff", "anonymous")

# Namespaces / names with their own authorization and their own tests.
EXEMPT = {
    "admin": "Django admin: staff login and model permissions (audit rows read-only)",
    "api-v1": "token-authenticated REST API, role matrix in tests/api",
    "tokens:revoke": "a user's own API token; tested in tests/api",
    "login": "authentication itself",
    "logout": "authentication itself",
    None: "the API's catch-all 404 (tests/api)",
}


def team(
    ok: int, *, viewer: int | None = None, member: int | None = None, admin: int | None = None
) -> dict[str, int]:
    """Team roles get ``ok`` unless overridden; outsiders 404; anonymous to the login page."""
    return {
        "owner": ok,
        "admin": ok if admin is None else admin,
        "member": ok if member is None else member,
        "viewer": ok if viewer is None else viewer,
        "stranger": 404,
        "staff": 404,
        "anonymous": 302,
    }


def everyone(ok: int) -> dict[str, int]:
    return {**dict.fromkeys(ROLES, ok), "anonymous": 302}


def staff_only(ok: int) -> dict[str, int]:
    return {**dict.fromkeys(ROLES, 403), "staff": ok, "anonymous": 302}


LAUNCH = team(302, viewer=403)  # member and up act; viewers read only
MANAGE = team(302, member=403, viewer=403)  # team admin and up


@dataclass
class Case:
    method: str
    kwargs: Callable[[Any], dict[str, Any]]
    expected: dict[str, int]
    data: Callable[[Any], dict[str, Any]] = field(default=lambda w: {})
    query: Callable[[Any], str] = field(default=lambda w: "")


def run_kw(w):
    return {"run_id": w.run.pk}


def project_kw(w):
    return {"project_id": w.project.pk}


def team_kw(w):
    return {"team_id": w.team.pk}


MATRIX: dict[str, list[Case]] = {
    "home": [Case("get", lambda w: {}, everyone(200))],
    "healthz": [Case("get", lambda w: {}, {**dict.fromkeys(ROLES, 200)})],
    "projects:list": [Case("get", lambda w: {}, everyone(200))],
    "projects:create": [Case("get", lambda w: {}, everyone(200))],
    "projects:detail": [Case("get", project_kw, team(200))],
    "projects:edit": [
        Case("get", project_kw, team(200, member=403, viewer=403)),
        Case("post", project_kw, team(400, member=403, viewer=403), data=lambda w: {"name": ""}),
    ],
    "projects:archive": [Case("post", project_kw, MANAGE)],
    "runs:history": [Case("get", lambda w: {}, everyone(200))],
    "runs:launch": [
        Case("get", project_kw, team(200, viewer=403)),
        Case("post", project_kw, LAUNCH, data=lambda w: {"kind": "script", "task": "echo hi"}),
    ],
    "runs:detail": [Case("get", run_kw, team(200))],
    "runs:header": [Case("get", run_kw, team(200))],
    "runs:files": [Case("get", run_kw, team(200))],
    "runs:cancel": [Case("post", run_kw, LAUNCH)],
    "runs:rerun": [Case("post", run_kw, LAUNCH)],
    "runs:log_lines": [Case("get", run_kw, team(200))],
    "runs:log_search": [Case("get", run_kw, team(200), query=lambda w: "?q=hello")],
    "runs:log_raw": [Case("get", run_kw, team(200))],
    "runs:artifacts_zip": [Case("get", run_kw, team(200))],
    "runs:artifact_view": [
        Case("get", lambda w: {"run_id": w.run.pk, "artifact_id": w.artifact.pk}, team(200))
    ],
    "runs:artifact_download": [
        Case("get", lambda w: {"run_id": w.run.pk, "artifact_id": w.artifact.pk}, team(200))
    ],
    "teams:list": [Case("get", lambda w: {}, everyone(200))],
    "teams:create": [Case("post", lambda w: {}, everyone(302), data=lambda w: {"name": "Gamma"})],
    "teams:detail": [Case("get", team_kw, team(200))],
    "teams:invite": [
        Case("post", team_kw, MANAGE, data=lambda w: {"who": "outsider", "role": "member"})
    ],
    "teams:member_role": [
        Case(
            "post",
            lambda w: {"team_id": w.team.pk, "membership_id": w.extra_membership.pk},
            MANAGE,
            data=lambda w: {"role": "viewer"},
        )
    ],
    "teams:member_remove": [
        Case(
            "post",
            lambda w: {"team_id": w.team.pk, "membership_id": w.extra_membership.pk},
            MANAGE,
        )
    ],
    "teams:invitation_revoke": [
        Case("post", lambda w: {"team_id": w.team.pk, "invitation_id": w.invitation.pk}, MANAGE)
    ],
    # Only the invitee may answer; for everyone else the invitation does not exist.
    "teams:invitation_respond": [
        Case(
            "post",
            lambda w: {"invitation_id": w.invitation.pk},
            {**dict.fromkeys(ROLES, 404), "anonymous": 302},
            data=lambda w: {"decision": "accept"},
        )
    ],
    "limits:manage": [
        Case("get", lambda w: {}, staff_only(200)),
        Case("post", lambda w: {}, staff_only(302), data=lambda w: {"max_memory_mb": 1024}),
    ],
    "limits:delete": [Case("post", lambda w: {"policy_id": w.policy.pk}, staff_only(302))],
    "limits:usage": [
        Case("get", lambda w: {}, everyone(200)),
        Case("get", lambda w: {}, team(200), query=lambda w: f"?team={w.team.pk}"),
        Case("get", lambda w: {}, team(200), query=lambda w: f"?project={w.project.pk}"),
    ],
    "audit:list": [Case("get", lambda w: {}, staff_only(200))],
    "audit:export": [Case("get", lambda w: {}, staff_only(200))],
    "reviews:queue": [Case("get", lambda w: {}, everyone(200))],
    "reviews:compare": [
        Case("get", lambda w: {}, team(200), query=lambda w: f"?run={w.run.pk}&run={w.run2.pk}")
    ],
    # Public by design: the token is the credential.
    "reviews:shared": [Case("get", lambda w: {"token": w.share_token}, dict.fromkeys(ROLES, 200))],
    "reviews:panel": [Case("get", run_kw, team(200))],
    "reviews:comment_add": [Case("post", run_kw, LAUNCH, data=lambda w: {"body": "looks fine"})],
    "reviews:comment_delete": [
        # The author (member) and project admins may delete; a viewer may not.
        Case("post", lambda w: {"run_id": w.run.pk, "comment_id": w.comment.pk}, LAUNCH)
    ],
    "reviews:verdict": [Case("post", run_kw, LAUNCH, data=lambda w: {"verdict": "approved"})],
    "reviews:labels": [Case("post", run_kw, LAUNCH, data=lambda w: {"label": "ok"})],
    "reviews:assign": [Case("post", run_kw, LAUNCH, data=lambda w: {"reviewer": "member"})],
    "reviews:share_create": [Case("post", run_kw, MANAGE, data=lambda w: {"days": 3})],
    "reviews:share_revoke": [
        Case("post", lambda w: {"run_id": w.run.pk, "link_id": w.share_link.pk}, MANAGE)
    ],
    "tokens:list": [Case("get", lambda w: {}, everyone(200))],
}


def url_names() -> list[str | None]:
    def walk(patterns, namespace=None):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                inner = pattern.namespace or namespace
                if namespace and pattern.namespace:
                    inner = f"{namespace}:{pattern.namespace}"
                yield from walk(pattern.url_patterns, inner)
            elif isinstance(pattern, URLPattern):
                if namespace and pattern.name:
                    yield f"{namespace}:{pattern.name}"
                elif namespace:
                    yield namespace  # an unnamed pattern inside a namespace
                else:
                    yield pattern.name

    return list(walk(get_resolver().url_patterns))


def exempt(name: str | None) -> bool:
    return name in EXEMPT or (name is not None and name.split(":")[0] in EXEMPT)


def test_every_url_has_a_rule():
    missing = [n for n in url_names() if not exempt(n) and n not in MATRIX]
    assert not missing, f"views without an authorization rule in tests/authz: {missing}"
    stale = [n for n in MATRIX if n not in url_names()]
    assert not stale, f"rules for URLs that no longer exist: {stale}"


@pytest.fixture
def scene(world, monkeypatch):
    monkeypatch.setattr(run_services, "enqueue_run", lambda run_id: None)
    w = world
    w.extra = make_user("extra")
    w.extra_membership = Membership.objects.create(team=w.team, user=w.extra, role="member")
    make_user("outsider")
    newbie = make_user("newbie")
    w.invitation = team_services.invite(
        team=w.team, actor=w.owner, actor_role="owner", who="newbie", role="member"
    )
    assert w.invitation.user == newbie
    w.run = run_services.start_run(project=w.project, user=w.member, task="echo", overrides={})
    w.run2 = run_services.start_run(project=w.project, user=w.member, task="echo 2", overrides={})
    w.artifact = Artifact.objects.create(
        run=w.run, path="out/a.txt", size=2, sha256="0" * 64, content=b"hi"
    )
    w.comment = review_services.add_comment(run=w.run, user=w.member, body="hm")
    w.share_link, w.share_token = review_services.create_share_link(run=w.run, user=w.owner, days=1)
    w.policy = limit_services.save_policy(
        actor=w.staff, scope="team", team=w.team, values={"max_concurrent_runs": 4}
    )
    return w


def user_for(w, role: str):
    return None if role == "anonymous" else getattr(w, role)


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_matrix(scene, name):
    failures = []
    for index, case in enumerate(MATRIX[name]):
        url = reverse(name, kwargs=case.kwargs(scene)) + case.query(scene)
        for role in ROLES:
            client = Client()
            user = user_for(scene, role)
            if user is not None:
                client.force_login(user)
            with transaction.atomic():
                response = getattr(client, case.method)(url, case.data(scene))
                transaction.set_rollback(True)
            expected = case.expected[role]
            if response.status_code != expected:
                failures.append(
                    f"case {index} {case.method.upper()} {url} as {role}: "
                    f"{response.status_code}, expected {expected}"
                )
            if role == "anonymous" and expected == 302:
                assert "/login/" in response["Location"], url
    assert not failures, "\n".join(failures)
