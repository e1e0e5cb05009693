from tests.teams.conftest import World, fast_password_hashing, world  # noqa: F401
