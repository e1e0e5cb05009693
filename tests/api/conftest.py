from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from django.test import Client

from apps.api import services
from apps.api.scopes import SCOPES
from tests.projects.factories import make_project, make_user

ALL_SCOPES = tuple(SCOPES)


def make_token(user, scopes=ALL_SCOPES, *, name: str = "ci", expires_at: dt.datetime | None = None):
    _token, raw = services.create_token(user=user, name=name, scopes=scopes, expires_at=expires_at)
    return raw


class ApiClient:
    """The Django test client speaking JSON with a bearer token."""

    def __init__(self, token: str | None = None):
        self.client = Client()
        self.token = token

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def request(self, method: str, path: str, body: Any = None, **params: Any):
        call = getattr(self.client, method.lower())
        if method.upper() in {"GET", "DELETE", "HEAD", "OPTIONS"}:
            params = {k: v for k, v in params.items() if v is not None}
            return call(path, params or None, headers=self.headers())
        data = json.dumps(body) if body is not None else ""
        return call(path, data, content_type="application/json", headers=self.headers())

    def get(self, path: str, **params: Any):
        return self.request("GET", path, **params)

    def post(self, path: str, body: Any = None):
        return self.request("POST", path, body)

    def patch(self, path: str, body: Any = None):
        return self.request("PATCH", path, body)

    def put(self, path: str, body: Any = None):
        return self.request("PUT", path, body)

    def delete(self, path: str):
        return self.request("DELETE", path)


def assert_error(response, status: int, code: str | None = None, field: str | None = None):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) >= {"code", "message", "field"} and error["message"]
    if code is not None:
        assert error["code"] == code, error
    if field is not None:
        assert error["field"] == field, error
    return error


@pytest.fixture
def alice(db):
    return make_user("alice")


@pytest.fixture
def bob(db):
    return make_user("bob")


@pytest.fixture
def project(alice):
    return make_project(alice, name="Demo")


@pytest.fixture
def as_alice(alice) -> ApiClient:
    return ApiClient(make_token(alice))


@pytest.fixture
def as_bob(bob) -> ApiClient:
    return ApiClient(make_token(bob))


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
