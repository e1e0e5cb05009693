"""Who may call the API: bearer tokens, their expiry and revocation, scopes, rate limits."""

from __future__ import annotations

import datetime as dt

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from apps.api import ratelimit, services
from apps.api.models import ApiToken
from apps.api.scopes import SCOPES
from tests.api.conftest import ApiClient, assert_error, make_token

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "not_authenticated"),
        ("Bearer", "token_invalid"),
        ("Bearer nonsense", "token_invalid"),
        ("Bearer sbx_" + "x" * 40, "token_invalid"),
        ("Token sbx_abc", "not_authenticated"),
        ("Basic YWxpY2U6cGFzcw==", "not_authenticated"),
    ],
)
def test_missing_or_bad_tokens_are_401(alice, project, header, code):
    client = ApiClient()
    headers = {"Authorization": header} if header else {}
    response = client.client.get(f"/api/v1/projects/{project.pk}", headers=headers)
    assert_error(response, 401, code)


def test_a_session_login_is_not_an_api_credential(client, alice, project):
    client.force_login(alice)
    assert_error(client.get(f"/api/v1/projects/{project.pk}"), 401)


def test_an_expired_token_is_401(alice, project):
    token, raw = services.create_token(
        user=alice,
        name="ci",
        scopes=["projects:read"],
        expires_at=timezone.now() + dt.timedelta(hours=1),
    )
    api = ApiClient(raw)
    assert api.get(f"/api/v1/projects/{project.pk}").status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert_error(api.get(f"/api/v1/projects/{project.pk}"), 401, "token_expired")


def test_a_deactivated_owner_locks_their_tokens(alice, project):
    api = ApiClient(make_token(alice))
    alice.is_active = False
    alice.save()
    assert_error(api.get("/api/v1/me"), 401, "user_inactive")


def test_use_is_recorded(alice):
    token, raw = services.create_token(user=alice, name="ci", scopes=["runs:read"])
    assert token.last_used_at is None
    ApiClient(raw).get("/api/v1/me")
    token.refresh_from_db()
    assert token.last_used_at is not None


# Each operation and the scope it needs; a token without it gets 403 naming the scope.
SCOPED = [
    ("GET", "/api/v1/projects", "projects:read"),
    ("POST", "/api/v1/projects", "projects:write"),
    ("GET", "/api/v1/projects/{project}", "projects:read"),
    ("PATCH", "/api/v1/projects/{project}", "projects:write"),
    ("POST", "/api/v1/projects/{project}/archive", "projects:write"),
    ("POST", "/api/v1/projects/{project}/restore", "projects:write"),
    ("GET", "/api/v1/runs", "runs:read"),
    ("POST", "/api/v1/runs", "runs:write"),
    ("GET", "/api/v1/runs/{run}", "runs:read"),
    ("POST", "/api/v1/runs/{run}/cancel", "runs:write"),
    ("POST", "/api/v1/runs/{run}/rerun", "runs:write"),
    ("GET", "/api/v1/runs/{run}/events", "runs:read"),
    ("GET", "/api/v1/runs/{run}/compare/{run}", "runs:read"),
    ("GET", "/api/v1/runs/{run}/log", "runs:read"),
    ("GET", "/api/v1/runs/{run}/artifacts", "runs:read"),
    ("GET", "/api/v1/runs/{run}/artifacts/1/download", "runs:read"),
    ("GET", "/api/v1/runs/{run}/review", "reviews:read"),
    ("PUT", "/api/v1/runs/{run}/verdict", "reviews:write"),
    ("POST", "/api/v1/runs/{run}/comments", "reviews:write"),
    ("DELETE", "/api/v1/runs/{run}/comments/1", "reviews:write"),
    ("POST", "/api/v1/runs/{run}/labels", "reviews:write"),
    ("DELETE", "/api/v1/runs/{run}/labels?label=x", "reviews:write"),
    ("PUT", "/api/v1/runs/{run}/reviewer", "reviews:write"),
    ("DELETE", "/api/v1/runs/{run}/reviewer", "reviews:write"),
    ("GET", "/api/v1/reviews/waiting", "reviews:read"),
    ("GET", "/api/v1/runs/{run}/share-links", "reviews:read"),
    ("POST", "/api/v1/runs/{run}/share-links", "reviews:write"),
    ("POST", "/api/v1/runs/{run}/share-links/1/revoke", "reviews:write"),
    ("GET", "/api/v1/teams", "teams:read"),
    ("POST", "/api/v1/teams", "teams:write"),
    ("GET", "/api/v1/teams/1", "teams:read"),
    ("GET", "/api/v1/teams/1/members", "teams:read"),
    ("PATCH", "/api/v1/teams/1/members/1", "teams:write"),
    ("DELETE", "/api/v1/teams/1/members/1", "teams:write"),
    ("POST", "/api/v1/teams/1/leave", "teams:write"),
    ("GET", "/api/v1/teams/1/invitations", "teams:read"),
    ("POST", "/api/v1/teams/1/invitations", "teams:write"),
    ("POST", "/api/v1/teams/1/invitations/1/revoke", "teams:write"),
    ("GET", "/api/v1/invitations", "teams:read"),
    ("POST", "/api/v1/invitations/1/accept", "teams:write"),
    ("POST", "/api/v1/invitations/1/decline", "teams:write"),
    ("GET", "/api/v1/limits", "limits:read"),
    ("GET", "/api/v1/limits/instance", "limits:read"),
    ("PATCH", "/api/v1/limits/instance", "limits:write"),
    ("GET", "/api/v1/limits/teams/1", "limits:read"),
    ("PATCH", "/api/v1/limits/teams/1", "limits:write"),
    ("DELETE", "/api/v1/limits/teams/1", "limits:write"),
    ("GET", "/api/v1/limits/users/alice", "limits:read"),
    ("PATCH", "/api/v1/limits/users/alice", "limits:write"),
    ("DELETE", "/api/v1/limits/users/alice", "limits:write"),
    ("GET", "/api/v1/usage", "limits:read"),
    ("GET", "/api/v1/audit", "audit:read"),
    ("GET", "/api/v1/audit/export.csv", "audit:read"),
]


@pytest.fixture
def run(alice, project):
    from apps.runs.services import start_run

    return start_run(project=project, user=alice, task="echo hi", overrides={})


@pytest.mark.parametrize(("method", "path", "scope"), SCOPED)
def test_every_operation_needs_its_scope(alice, project, run, method, path, scope):
    path = path.format(project=project.pk, run=run.pk)
    resource = scope.split(":")[0]
    other = "runs:write" if resource in {"projects", "reviews"} else "projects:write"
    lacking = ApiClient(make_token(alice, [other]))
    error = assert_error(lacking.request(method, path, {}), 403, "missing_scope")
    assert scope in error["message"]
    write = scope.replace(":read", ":write")
    if scope.endswith(":read") and write in SCOPES:
        # Write implies read. (Limits are read by instance admins only: make Alice one, or
        # her role would be the 403.)
        alice.is_staff = resource == "limits"
        alice.save()
        writer = ApiClient(make_token(alice, [write]))
        assert writer.request(method, path).status_code != 403


def test_me_works_with_any_scope(alice):
    api = ApiClient(make_token(alice, ["runs:read"], name="reader"))
    body = api.get("/api/v1/me").json()
    assert body["user"] == "alice" and body["token"]["scopes"] == ["runs:read"]
    assert body["token"]["name"] == "reader" and "memory_mb" in body["limits"]["per_run"]
    assert body["usage"]["runs_total"] == 0


def test_a_token_never_reaches_beyond_its_owner(alice, bob, project, run):
    """Bob's all-scopes token sees none of Alice's objects: 404, exactly as for nonexistent."""
    api = ApiClient(make_token(bob))
    missing = ApiClient(make_token(bob)).get("/api/v1/projects/999999").json()
    # Well-formed bodies: a malformed one is a 400 before any lookup, for any id.
    bodies = {
        "verdict": {"verdict": "approved"},
        "comments": {"body": "hi"},
        "labels": {"label": "x"},
        "reviewer": {"reviewer": "bob"},
        "share-links": {"days": 7},
    }
    for method, path, _ in SCOPED:
        body = bodies.get(path.rsplit("/", 1)[-1], {})
        response = api.request(method, path.format(project=project.pk, run=run.pk), body)
        if "{" in path:
            assert response.json() == missing, (method, path)
            assert response.status_code == 404
    assert api.get("/api/v1/projects").json()["items"] == []
    assert api.get("/api/v1/runs").json()["items"] == []
    launched = api.post("/api/v1/runs", {"project": project.pk, "task": "echo"})
    assert_error(launched, 404, "not_found")


@pytest.fixture
def fresh_window(redis_server, settings):
    settings.API_RATE_LIMIT_REQUESTS = 3
    settings.API_RATE_LIMIT_WINDOW_SECONDS = 3600
    yield
    client = redis.Redis.from_url(redis_server)
    for key in client.scan_iter(f"{ratelimit.KEY_PREFIX}:*"):
        client.delete(key)
    client.close()


def test_the_rate_limit_is_per_token_with_429_and_retry_after(alice, fresh_window):
    first, second = ApiClient(make_token(alice)), ApiClient(make_token(alice))
    for _ in range(settings.API_RATE_LIMIT_REQUESTS):
        assert first.get("/api/v1/me").status_code == 200
    limited = first.get("/api/v1/me")
    error = assert_error(limited, 429, "rate_limited")
    assert (
        error["limit"] == "api_requests_per_token" and "3 requests per 3600 s" in error["message"]
    )
    assert 1 <= int(limited["Retry-After"]) <= 3600
    assert second.get("/api/v1/me").status_code == 200


def test_the_window_resets(alice, fresh_window):
    token = ApiToken.objects.get(
        pk=services.create_token(user=alice, name="x", scopes=["runs:read"])[0].pk
    )
    now = 1_000_000 * 3600.0
    assert [ratelimit.hit(token_id=token.pk, now=now).allowed for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    assert ratelimit.hit(token_id=token.pk, now=now + 10).retry_after == 3590
    assert ratelimit.hit(token_id=token.pk, now=now + 3600).allowed


def test_without_redis_requests_are_let_through(alice, settings, monkeypatch):
    class Broken:
        def get(self, key):
            raise redis.ConnectionError("down")

        def pipeline(self, **kwargs):
            raise redis.ConnectionError("down")

    monkeypatch.setattr(ratelimit, "_client", lambda: Broken())
    settings.API_RATE_LIMIT_REQUESTS = 1
    api = ApiClient(make_token(alice))
    assert [api.get("/api/v1/projects").status_code for _ in range(3)] == [200, 200, 200]


# -- failed authentication per client IP ----------------------------------------------------------


@pytest.fixture
def auth_failure_window(redis_server, settings):
    settings.API_AUTH_FAILURE_LIMIT_REQUESTS = 3
    settings.API_AUTH_FAILURE_WINDOW_SECONDS = 3600
    yield
    client = redis.Redis.from_url(redis_server)
    for key in client.scan_iter(f"{ratelimit.AUTH_FAILURE_PREFIX}:*"):
        client.delete(key)
    client.close()


def from_address(ip: str, token: str | None = None) -> ApiClient:
    from django.test import Client

    api = ApiClient(token)
    api.client = Client(REMOTE_ADDR=ip)
    return api


def test_token_guessing_is_bounded_per_client_ip(alice, auth_failure_window):
    raw = make_token(alice)
    guesser = from_address("10.0.0.7", "sbx_" + "x" * 40)
    anonymous = from_address("10.0.0.7")
    statuses = [guesser.get("/api/v1/me").status_code for _ in range(2)]
    statuses.append(anonymous.get("/api/v1/projects").status_code)  # no token counts too
    assert statuses == [401, 401, 401]
    limited = guesser.get("/api/v1/me")
    error = assert_error(limited, 429, "rate_limited")
    assert error["limit"] == "api_auth_failures_per_ip" and "3 per 3600 s" in error["message"]
    assert 1 <= int(limited["Retry-After"]) <= 3600
    # Past the limit a right token is not even looked at: a guess cannot tell right from wrong.
    assert_error(from_address("10.0.0.7", raw).get("/api/v1/me"), 429, "rate_limited")
    assert_error(anonymous.get("/api/v1/runs"), 429)
    # Other addresses are unaffected, and valid tokens there never count.
    assert from_address("10.0.0.8", raw).get("/api/v1/me").status_code == 200
    for _ in range(5):
        assert from_address("10.0.0.9", raw).get("/api/v1/me").status_code == 200
    assert_error(from_address("10.0.0.9").get("/api/v1/me"), 401)


def test_a_missing_scope_is_not_an_authentication_failure(alice, auth_failure_window):
    api = from_address("10.0.0.10", make_token(alice, ["runs:read"]))
    for _ in range(5):
        assert_error(api.get("/api/v1/projects"), 403, "missing_scope")
    assert api.get("/api/v1/runs").status_code == 200


def test_the_auth_failure_window_resets(auth_failure_window):
    now = 1_000_000 * 3600.0
    for _ in range(3):
        ratelimit.note_auth_failure(ip="10.0.0.11", now=now)
    assert ratelimit.auth_failures(ip="10.0.0.11", now=now + 10).count == 3
    assert ratelimit.auth_failures(ip="10.0.0.11", now=now + 10).retry_after == 3590
    assert ratelimit.auth_failures(ip="10.0.0.11", now=now + 3600).count == 0


def test_without_redis_failed_authentication_is_not_throttled(settings, monkeypatch):
    class Broken:
        def get(self, key):
            raise redis.ConnectionError("down")

        def pipeline(self, **kwargs):
            raise redis.ConnectionError("down")

    monkeypatch.setattr(ratelimit, "_client", lambda: Broken())
    settings.API_AUTH_FAILURE_LIMIT_REQUESTS = 1
    api = from_address("10.0.0.12")
    assert [api.get("/api/v1/me").status_code for _ in range(3)] == [401, 401, 401]
