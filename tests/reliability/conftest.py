"""Fault-injection tests: real worker processes, daphne, Docker, Redis and the test database.

Everything here runs against real parts (tests/conftest.py: start_worker/stop_worker,
child_environment); faults are injected by killing processes, redelivering messages and
dropping sockets, never by mocking the product.
"""

from __future__ import annotations

import pytest

from tests.projects.factories import make_project, make_user


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def owner(db):
    return make_user("chaos-owner")


@pytest.fixture
def project(owner):
    return make_project(owner, name="Chaos")
