"""Unsafe methods need the CSRF token (htmx sends it as X-CSRFToken from <body hx-headers>)."""

from __future__ import annotations

import json

import pytest
from django.db import transaction
from django.test import Client
from django.urls import reverse

from apps.runs import services as run_services
from apps.runs.models import Run

# Imported by name (not test_*), so the matrix's own tests are not collected twice; ``scene`` is
# its fixture.
from tests.authz.test_matrix import MATRIX, scene, url_names  # noqa: F401

POSTS = [
    ("reviews:verdict", lambda w: {"run_id": w.run.pk}, {"verdict": "approved"}),
    ("reviews:comment_add", lambda w: {"run_id": w.run.pk}, {"body": "hi"}),
    ("teams:invite", lambda w: {"team_id": w.team.pk}, {"who": "viewer", "role": "member"}),
    ("limits:manage", lambda w: {}, {"max_memory_mb": 512}),
]


@pytest.mark.parametrize(("name", "kwargs", "data"), POSTS, ids=[p[0] for p in POSTS])
def test_posts_without_the_token_are_refused_and_with_it_accepted(
    world, monkeypatch, name, kwargs, data
):
    monkeypatch.setattr(run_services, "enqueue_run", lambda run_id: None)
    world.run = run_services.start_run(
        project=world.project, user=world.member, task="e", overrides={}
    )
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.staff if name.startswith("limits") else world.owner)
    url = reverse(name, kwargs=kwargs(world))
    assert client.post(url, data, HTTP_HX_REQUEST="true").status_code == 403
    client.get(reverse("teams:list"))  # sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    response = client.post(url, data, HTTP_HX_REQUEST="true", HTTP_X_CSRFTOKEN=token)
    assert response.status_code in (200, 302)


# -- every URL of the site (the authorization matrix's walk of the URLconf) -----------------------

UNSAFE = ("post", "put", "patch", "delete")
CSRF_REFUSED = b"CSRF verification failed"

# URLs outside the matrix that still take a session and state-changing requests.
EXTRA = {
    "login": lambda w: {},
    "logout": lambda w: {},
    "tokens:revoke": lambda w: {"token_id": w.api_token.pk},
    "admin:index": lambda w: {},
    "admin:logout": lambda w: {},
    "admin:auth_user_add": lambda w: {},
}


def acting_user(w, name: str):
    return w.staff if name.split(":")[0] in {"limits", "audit", "admin"} else w.owner


@pytest.fixture
def csrf_scene(scene):  # noqa: F811 - the imported fixture
    from apps.api import services as api_services

    scene.staff.is_superuser = True
    scene.staff.save(update_fields=["is_superuser"])
    scene.api_token, _raw = api_services.create_token(
        user=scene.owner, name="ci", scopes=["runs:read"]
    )
    return scene


def test_every_session_url_refuses_unsafe_methods_without_the_token(csrf_scene):
    """Every URL of the site (the walk of the URLconf that tests/authz/test_matrix.py keeps
    complete), every unsafe method, as a user allowed to act there: 403 from the CSRF check
    before the view runs. A @csrf_exempt view would answer something else and fail this."""
    w = csrf_scene
    names = {**{n: MATRIX[n][0].kwargs for n in MATRIX}, **EXTRA}
    assert {n for n in url_names() if n in MATRIX} == set(MATRIX)  # the walk is complete
    failures = []
    for name, kwargs in sorted(names.items()):
        url = reverse(name, kwargs=kwargs(w))
        client = Client(enforce_csrf_checks=True)
        if name != "login":
            client.force_login(acting_user(w, name))
        for method in UNSAFE:
            with transaction.atomic():
                response = getattr(client, method)(url, {}, HTTP_HX_REQUEST="true")
                transaction.set_rollback(True)
            if response.status_code != 403 or CSRF_REFUSED not in response.content:
                failures.append(f"{method.upper()} {url}: {response.status_code}")
    assert not failures, "\n".join(failures)


def test_every_post_of_the_matrix_gets_through_with_the_token(csrf_scene):
    """The other half: with the token the same request reaches the view and gets the answer
    the authorization matrix expects (so the 403s above are CSRF, not permissions)."""
    w = csrf_scene
    failures = []
    for name, cases in sorted(MATRIX.items()):
        for case in cases:
            if case.method != "post":
                continue
            user = acting_user(w, name)
            role = "staff" if user == w.staff else "owner"
            client = Client(enforce_csrf_checks=True)
            client.force_login(user)
            client.get(reverse("teams:list"))  # sets the csrftoken cookie
            token = client.cookies["csrftoken"].value
            url = reverse(name, kwargs=case.kwargs(w)) + case.query(w)
            with transaction.atomic():
                response = client.post(url, case.data(w), HTTP_X_CSRFTOKEN=token)
                transaction.set_rollback(True)
            if response.status_code != case.expected[role]:
                failures.append(f"POST {url} as {role}: {response.status_code}")
    assert not failures, "\n".join(failures)


def test_the_api_ignores_the_session_cookie_so_csrf_does_not_apply(csrf_scene):
    """The REST API is exempt from CSRF because it authenticates by bearer token only: a
    browser's session cookie, which a forged cross-site request would carry, grants nothing."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(csrf_scene.owner)
    response = client.post(
        "/api/v1/runs",
        data=json.dumps({"project": csrf_scene.project.pk, "task": "echo x"}),
        content_type="application/json",
    )
    assert response.status_code == 401
    assert not Run.objects.filter(task="echo x").exists()
