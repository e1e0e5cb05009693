from tests.runs.conftest import anthropic_server, worker  # noqa: F401
from tests.teams.conftest import World, fast_password_hashing, world  # noqa: F401
