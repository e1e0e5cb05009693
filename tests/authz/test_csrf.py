"""Unsafe methods need the CSRF token (htmx sends it as X-CSRFToken from <body hx-headers>)."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from apps.runs import services as run_services

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
