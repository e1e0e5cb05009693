"""Settings come from the environment; bad values are refused at start, by name."""

import subprocess
import sys

import pytest

from sandboxweb import env

from ..conftest import REPO_ROOT


def run_check(**environment: str) -> subprocess.CompletedProcess:
    import os

    child = {k: v for k, v in os.environ.items() if k not in environment}
    child.update(environment)
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO_ROOT,
        env=child,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "foo"),
        ("DATABASE_URL", "mysql://db/x"),
        ("REDIS_URL", "http://localhost:6379"),
        ("DEBUG", "maybe"),
        ("SANDBOX_POOL_SIZE", "-1"),
        ("SANDBOX_POOL_SIZE", "many"),
        ("SANDBOXWEB_INSTANCE", "Prod_1"),
        ("DOCKER_HOST", "ftp://somewhere"),
        ("ANTHROPIC_BASE_URL", "not-a-url"),
        ("SECRET_KEY", "short"),
    ],
)
def test_bad_environment_value_is_refused_with_its_name(name, value):
    result = run_check(**{name: value})
    assert result.returncode == 2
    assert name in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_valid_environment_passes_the_system_check(tmp_path):
    result = run_check(
        DATABASE_URL=f"sqlite:///{tmp_path / 'x.sqlite3'}",
        REDIS_URL="redis://127.0.0.1:6390/3",
        DEBUG="no",
        ALLOWED_HOSTS="example.test, other.test",
    )
    assert result.returncode == 0, result.stderr


def test_secret_key_is_generated_once_and_kept(tmp_path, monkeypatch):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    store = tmp_path / "var" / "secret_key"
    first = env.secret_key("SECRET_KEY", store)
    assert len(first) >= 50
    assert env.secret_key("SECRET_KEY", store) == first
    assert oct(store.stat().st_mode & 0o777) == "0o600"


def test_typed_parsers(monkeypatch):
    monkeypatch.setenv("X_BOOL", "Yes")
    monkeypatch.setenv("X_INT", " 42 ")
    monkeypatch.setenv("X_LIST", "a, b,,c ")
    assert env.get_bool("X_BOOL") is True
    assert env.get_int("X_INT", 0) == 42
    assert env.get_list("X_LIST", []) == ["a", "b", "c"]
    assert env.get_int("X_UNSET", 7) == 7
    monkeypatch.setenv("X_INT", "4.5")
    with pytest.raises(env.EnvError, match="X_INT"):
        env.get_int("X_INT", 0)


def test_secret_key_is_not_tracked_by_git():
    tracked = subprocess.run(
        ["git", "ls-files", "var"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert tracked.stdout == ""
