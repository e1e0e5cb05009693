"""Log-in rate limiting through the real log-in form (CSRF enforced), counted in Redis."""

from __future__ import annotations

import re
import secrets

import pytest
import redis
from django.conf import settings
from django.test import Client

from apps.audit.models import AuditEvent
from apps.core import login_throttle
from apps.runs.execution import instance_tag
from tests.projects.factories import PASSWORD, make_user

pytestmark = pytest.mark.django_db

LOCKED = "Too many failed log-in attempts"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # Dozens of log-ins per test; PBKDF2's deliberate slowness is not what is tested here.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def clean_counters(redis_server):
    """This installation's counters only (the key names carry the test database's tag)."""

    def clear() -> None:
        client = redis.Redis.from_url(settings.REDIS_URL)
        for key in client.scan_iter(f"*:login:{instance_tag()}:*"):
            client.delete(key)

    clear()
    yield
    clear()


def browser(ip: str | None = None) -> Client:
    return Client(enforce_csrf_checks=True, REMOTE_ADDR=ip or f"10.9.{secrets.randbelow(250)}.7")


def attempt(client: Client, username: str, password: str, path: str = "/login/"):
    page = client.get(path)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    return client.post(
        path,
        {"username": username, "password": password, "csrfmiddlewaretoken": token.group(1)},
    )


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def fail(client: Client, username: str, times: int) -> None:
    for _ in range(times):
        response = attempt(client, username, "wrong-password")
        assert response.status_code == 200


def test_five_failures_lock_the_username_even_with_the_right_password(settings):
    make_user("lockme")
    client = browser()
    fail(client, "lockme", 4)
    page = attempt(client, "lockme", "wrong-password").content.decode()
    assert LOCKED in page and "locked for 15 minutes" in page

    response = attempt(client, "lockme", PASSWORD)
    assert response.status_code == 200
    assert LOCKED in response.content.decode()
    assert not logged_in(client)
    # From another address too: the lock is on the username.
    other = browser()
    assert LOCKED in attempt(other, "LockMe", PASSWORD).content.decode()
    assert not logged_in(other)
    # The admin's log-in form goes through the same authenticate().
    attempt(other, "lockme", PASSWORD, path="/admin/login/")
    assert not logged_in(other)


def test_failures_before_the_limit_show_the_usual_error_and_a_success_resets_the_count():
    make_user("forgetful")
    client = browser()
    fail(client, "forgetful", 3)
    page = attempt(client, "forgetful", "still-wrong").content.decode()
    assert LOCKED not in page and "correct username and password" in page
    assert attempt(client, "forgetful", PASSWORD).status_code == 302
    assert logged_in(client)
    client.post("/logout/", {"csrfmiddlewaretoken": client.cookies["csrftoken"].value})
    fail(client, "forgetful", 4)  # four more after the success: not locked
    assert attempt(client, "forgetful", PASSWORD).status_code == 302


def test_one_address_is_locked_after_the_address_limit_across_usernames(settings):
    settings.LOGIN_IP_FAILURE_LIMIT = 6
    make_user("victim")
    client = browser("10.20.30.40")
    for n in range(6):
        attempt(client, f"guess{n}", "wrong")
    # Every username from that address is refused now, the right password too ...
    response = attempt(client, "victim", PASSWORD)
    assert LOCKED in response.content.decode()
    assert not logged_in(client)
    # ... while the same user from another address logs in (the username has no failures).
    elsewhere = browser("10.20.30.41")
    assert attempt(elsewhere, "victim", PASSWORD).status_code == 302
    assert logged_in(elsewhere)


def test_the_lock_ends_with_the_window(monkeypatch):
    make_user("patient")
    client = browser()
    fail(client, "patient", 5)
    assert LOCKED in attempt(client, "patient", PASSWORD).content.decode()

    start = login_throttle.now()
    window = settings.LOGIN_FAILURE_WINDOW_SECONDS
    monkeypatch.setattr(login_throttle, "now", lambda: start + window - 30)
    page = attempt(client, "patient", PASSWORD).content.decode()
    assert "locked for 1 minute;" in page
    monkeypatch.setattr(login_throttle, "now", lambda: start + window + 1)
    assert attempt(client, "patient", PASSWORD).status_code == 302
    assert logged_in(client)


def test_a_lockout_is_audited_once_with_username_and_address():
    client = browser("10.77.0.5")
    fail(client, "ghost", 7)
    events = list(AuditEvent.objects.filter(action=login_throttle.ACTION_LOCKOUT))
    assert len(events) == 1
    event = events[0]
    assert event.actor is None
    assert event.target_repr == "ghost"
    assert event.ip == "10.77.0.5"
    assert event.after["username"] == "ghost"
    assert event.after["window_seconds"] == settings.LOGIN_FAILURE_WINDOW_SECONDS


def test_without_the_csrf_token_the_form_is_refused_and_nothing_is_counted():
    make_user("csrfless")
    client = browser()
    client.get("/login/")
    for _ in range(6):
        response = client.post("/login/", {"username": "csrfless", "password": "x"})
        assert response.status_code == 403
    assert login_throttle.locked(username="csrfless", ip=None) is None
    assert attempt(client, "csrfless", PASSWORD).status_code == 302


def test_without_redis_log_in_still_works_unthrottled(settings):
    """Best effort by design: a Redis outage must not become a log-in outage."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:9/0",  # nothing listens there
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    make_user("outage")
    client = browser()
    fail(client, "outage", 6)
    response = attempt(client, "outage", PASSWORD)
    assert response.status_code == 302
    assert logged_in(client)
