import pytest

from tests.projects.factories import make_project, make_user


@pytest.fixture
def alice(db):
    return make_user("alice")


@pytest.fixture
def bob(db):
    return make_user("bob")


@pytest.fixture
def project(alice):
    return make_project(alice, name="Demo")


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session")
def anthropic_server():
    from tests.support.anthropic_server import AnthropicServer

    with AnthropicServer() as server:
        yield server


@pytest.fixture(scope="session")
def worker(
    django_db_setup,
    django_db_blocker,
    redis_server,
    docker_engine,
    anthropic_server,
    tmp_path_factory,
):
    from tests.runs.workers import runs_worker

    with (
        django_db_blocker.unblock(),
        runs_worker(
            tmp_path_factory.mktemp("runs-worker"), anthropic_url=anthropic_server.base_url
        ) as process,
    ):
        yield process
