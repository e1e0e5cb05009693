"""Personal API tokens: created in the UI, shown once, stored hashed, listed by prefix, revoked."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from apps.api import services
from apps.api.models import ApiToken
from tests.api.conftest import ApiClient, assert_error
from tests.projects.factories import PASSWORD

pytestmark = pytest.mark.django_db


def test_a_token_is_stored_only_as_its_hash_with_a_listing_prefix(alice):
    token, raw = services.create_token(user=alice, name="ci", scopes=["runs:read"])
    assert raw.startswith("sbx_") and len(raw) >= 44
    assert token.token_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert token.prefix == raw[:12] and raw not in str(ApiToken.objects.values().get())
    other, raw2 = services.create_token(user=alice, name="ci", scopes=["runs:read"])
    assert raw2 != raw and other.token_hash != token.token_hash


@pytest.mark.parametrize(
    ("name", "scopes", "days", "field"),
    [
        ("", ["runs:read"], None, "name"),
        ("ci", [], None, "scopes"),
        ("ci", ["runs:admin"], None, "scopes"),
        ("ci", ["runs:read"], -1, "expires_at"),
    ],
)
def test_invalid_tokens_are_refused_naming_the_field(alice, name, scopes, days, field):
    expires = timezone.now() + dt.timedelta(days=days) if days is not None else None
    with pytest.raises(ValidationError) as caught:
        services.create_token(user=alice, name=name, scopes=scopes, expires_at=expires)
    assert field in caught.value.message_dict


def test_the_page_needs_a_login(client):
    response = client.get(reverse("tokens:list"))
    assert response.status_code == 302 and reverse("login") in response["Location"]


def test_creating_a_token_shows_it_once_and_lists_it_by_prefix(client, alice):
    client.login(username="alice", password=PASSWORD)
    response = client.post(
        reverse("tokens:list"),
        {"name": "CI <main>", "scopes": ["runs:write", "projects:read"], "expiry": "7"},
    )
    assert response.status_code == 200
    raw = response.context["raw_token"]
    token = ApiToken.objects.get(user=alice)
    assert raw.encode() in response.content and token.prefix in raw
    assert b"CI &lt;main&gt;" in response.content  # escaped like everything else
    assert token.scopes == ["projects:read", "runs:write"]
    assert token.expires_at - timezone.now() > dt.timedelta(days=6, hours=23)
    assert response["Cache-Control"].startswith("max-age=0")
    # Shown once: the list page never has the secret again, only the prefix.
    again = client.get(reverse("tokens:list"))
    assert raw.encode() not in again.content and token.prefix.encode() in again.content
    assert ApiClient(raw).get("/api/v1/me").status_code == 200


def test_a_form_error_is_a_400_and_creates_nothing(client, alice):
    client.login(username="alice", password=PASSWORD)
    response = client.post(reverse("tokens:list"), {"name": "", "scopes": [], "expiry": "7"})
    assert response.status_code == 400 and not ApiToken.objects.exists()


def test_revoking_stops_the_token_at_once(client, alice):
    token, raw = services.create_token(user=alice, name="ci", scopes=["runs:read"])
    api = ApiClient(raw)
    assert api.get("/api/v1/me").status_code == 200
    client.login(username="alice", password=PASSWORD)
    response = client.post(reverse("tokens:revoke", args=[token.pk]))
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.is_revoked
    assert_error(api.get("/api/v1/me"), 401, "token_revoked")
    assert b"revoked" in client.get(reverse("tokens:list")).content


def test_a_stranger_cannot_see_or_revoke_someone_elses_token(client, alice, bob):
    token, _raw = services.create_token(user=alice, name="alice-ci", scopes=["runs:read"])
    client.login(username="bob", password=PASSWORD)
    assert b"alice-ci" not in client.get(reverse("tokens:list")).content
    assert client.post(reverse("tokens:revoke", args=[token.pk])).status_code == 404
    token.refresh_from_db()
    assert not token.is_revoked


def test_revoke_needs_post(client, alice):
    token, _ = services.create_token(user=alice, name="ci", scopes=["runs:read"])
    client.login(username="alice", password=PASSWORD)
    assert client.get(reverse("tokens:revoke", args=[token.pk])).status_code == 405


def test_the_nav_links_to_the_token_page(client, alice):
    client.login(username="alice", password=PASSWORD)
    page = client.get(reverse("home")).content.decode()
    assert f'href="{reverse("tokens:list")}"' in page


def test_the_token_page_offers_the_administration_scopes(client, alice):
    client.login(username="alice", password=PASSWORD)
    page = client.get(reverse("tokens:list")).content.decode()
    for scope in ("teams:read", "teams:write", "limits:read", "limits:write", "audit:read"):
        assert f'value="{scope}"' in page, scope
    response = client.post(
        reverse("tokens:list"), {"name": "admin", "scopes": ["teams:write"], "expiry": "7"}
    )
    raw = response.context["raw_token"]
    # teams:write implies teams:read.
    assert ApiClient(raw).get("/api/v1/teams").status_code == 200
