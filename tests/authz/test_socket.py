"""The run WebSocket in the matrix, and closing it when a member is removed or demoted."""

from __future__ import annotations

import time

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from apps.runs import services as run_services
from apps.teams import services as team_services
from sandboxweb.asgi import application
from tests.teams.conftest import World

pytestmark = pytest.mark.django_db(transaction=True)
HEADERS = [(b"origin", b"http://localhost"), (b"host", b"localhost")]


@database_sync_to_async
def make_scene(monkeypatch) -> World:
    monkeypatch.setattr(run_services, "enqueue_run", lambda run_id: None)
    world = World()
    world.run = run_services.start_run(
        project=world.project, user=world.member, task="echo", overrides={}
    )
    return world


@pytest.fixture(autouse=True)
async def close_db_connections():
    """The consumer's database calls run on one shared thread: close its connection afterwards,
    or PostgreSQL cannot drop the test database."""
    yield
    from django.db import connections

    await database_sync_to_async(connections.close_all)()


async def connect(user, run_id: int) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, f"/ws/runs/{run_id}/", headers=HEADERS)
    communicator.scope["user"] = user
    return communicator


async def test_socket_matrix(redis_server, monkeypatch, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    w = await make_scene(monkeypatch)
    expected = {
        "owner": (True, None),
        "admin": (True, None),
        "member": (True, None),
        "viewer": (True, None),
        "stranger": (False, 4403),
        "staff": (False, 4403),
    }
    for role, outcome in expected.items():
        communicator = await connect(getattr(w, role), w.run.pk)
        connected, code = await communicator.connect()
        assert (connected, code if not connected else None) == outcome, role
        if connected:
            message = await communicator.receive_json_from(timeout=5)
            assert message["type"] == "events"
            await communicator.disconnect()
    anonymous = await connect(AnonymousUser(), w.run.pk)
    assert await anonymous.connect() == (False, 4401)


@pytest.mark.parametrize("change", ["remove", "demote-to-nothing"])
async def test_removing_a_member_closes_their_open_run_sockets(
    redis_server, monkeypatch, settings, change
):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # The consumer's safety-net poll would also notice, in time: take it out of the picture so
    # only the access-changed notice can close the socket.
    monkeypatch.setattr("apps.runs.consumers.POLL_SECONDS", 60.0)
    w = await make_scene(monkeypatch)
    viewer_socket = await connect(w.viewer, w.run.pk)
    assert (await viewer_socket.connect())[0]
    await viewer_socket.receive_json_from(timeout=5)
    other_socket = await connect(w.admin, w.run.pk)
    assert (await other_socket.connect())[0]
    await other_socket.receive_json_from(timeout=5)

    @database_sync_to_async
    def remove() -> None:
        membership = w.membership(w.viewer)
        if change == "remove":
            team_services.remove_member(membership=membership, actor=w.owner, actor_role="owner")
        else:  # the viewer leaves on their own
            team_services.remove_member(membership=membership, actor=w.viewer, actor_role="viewer")

    started = time.monotonic()
    await remove()
    output = await viewer_socket.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": 4403}
    assert time.monotonic() - started < 2.0
    # Everyone else stays connected.
    assert await other_socket.receive_nothing(timeout=0.5)
    await other_socket.disconnect()


@pytest.mark.parametrize(
    "headers",
    [
        [(b"origin", b"http://evil.example"), (b"host", b"localhost")],
        [(b"origin", b"http://localhost.evil.example"), (b"host", b"localhost")],
        [(b"origin", b"null"), (b"host", b"localhost")],
        [(b"host", b"localhost")],  # no Origin header at all
    ],
    ids=["foreign", "lookalike", "null", "missing"],
)
async def test_a_socket_from_another_origin_is_refused_even_for_the_owner(
    redis_server, monkeypatch, settings, headers
):
    """Cross-site WebSocket hijacking: the browser sends the victim's cookie with a socket a
    foreign page opens, so the Origin check is what stands between it and the run's log."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    w = await make_scene(monkeypatch)
    communicator = WebsocketCommunicator(application, f"/ws/runs/{w.run.pk}/", headers=headers)
    communicator.scope["user"] = w.owner
    connected, _code = await communicator.connect()
    assert connected is False
    # The same owner from the site's own origin is let in (the refusal is about the origin).
    same_site = await connect(w.owner, w.run.pk)
    assert (await same_site.connect())[0] is True
    await same_site.disconnect()
