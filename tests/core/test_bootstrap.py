"""`make run`'s first-start chores: idempotent, and one clear sentence when a part is missing."""

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from apps.core import bootstrap


@pytest.mark.django_db
def test_first_admin_is_created_once_with_a_printed_password():
    lines: list[str] = []
    assert bootstrap.ensure_admin(lines.append) == "admin: created user 'admin'"
    password = next(line.split(": ", 1)[1] for line in lines if "password:" in line)
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.check_password(password)
    again: list[str] = []
    assert "exists" in bootstrap.ensure_admin(again.append)
    assert again == []
    assert get_user_model().objects.filter(is_superuser=True).count() == 1


@pytest.mark.django_db
def test_unreachable_explicit_redis_is_one_sentence_naming_the_setting(settings, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    with pytest.raises(bootstrap.BootstrapError) as excinfo:
        bootstrap.ensure_redis(lambda line: None)
    message = str(excinfo.value)
    assert "REDIS_URL" in message and "\n" not in message


@pytest.mark.django_db
def test_bootstrap_command_is_idempotent(docker_engine, redis_server):
    out = io.StringIO()
    call_command("bootstrap", "--skip-admin", stdout=out)
    call_command("bootstrap", "--skip-admin", stdout=out)
    text = out.getvalue()
    assert text.count("redis: redis://") == 2  # found running, not started again
    assert "is up to date" in text  # the image is not rebuilt


@pytest.mark.django_db
def test_unreachable_docker_host_fails_with_the_fix(monkeypatch, redis_server):
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    with pytest.raises(CommandError) as excinfo:
        call_command("bootstrap", "--skip-admin", "--skip-image", stdout=io.StringIO())
    assert "DOCKER_HOST" in str(excinfo.value)


def test_unreachable_database_is_one_sentence_naming_the_setting():
    import os
    import subprocess
    import sys

    from ..conftest import REPO_ROOT

    environment = dict(os.environ, DATABASE_URL="postgres://u:p@127.0.0.1:1/nothing")
    result = subprocess.run(
        [sys.executable, "manage.py", "bootstrap", "--skip-image", "--skip-admin"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr
