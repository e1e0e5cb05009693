"""Removing a member through the API closes their open run sockets, as the team page does
(the service rings their channel group after the commit)."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from tests.api.conftest import ApiClient, make_token
from tests.authz.test_socket import close_db_connections, connect, make_scene  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("how", ["removed by an admin", "leaves"])
async def test_removal_through_the_api_closes_the_members_run_sockets(
    redis_server, monkeypatch, settings, how
):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.API_RATE_LIMIT_REQUESTS = 100_000
    # Only the access-changed notice may close the socket, not the consumer's safety-net poll.
    monkeypatch.setattr("apps.runs.consumers.POLL_SECONDS", 60.0)
    w = await make_scene(monkeypatch)
    viewer_socket = await connect(w.viewer, w.run.pk)
    assert (await viewer_socket.connect())[0]
    await viewer_socket.receive_json_from(timeout=5)
    admin_socket = await connect(w.admin, w.run.pk)
    assert (await admin_socket.connect())[0]
    await admin_socket.receive_json_from(timeout=5)

    @database_sync_to_async
    def remove() -> int:
        if how == "leaves":
            client = ApiClient(make_token(w.viewer, ["teams:write"]))
            return client.post(f"/api/v1/teams/{w.team.pk}/leave").status_code
        client = ApiClient(make_token(w.admin, ["teams:write"]))
        membership = w.membership(w.viewer)
        return client.delete(f"/api/v1/teams/{w.team.pk}/members/{membership.pk}").status_code

    assert await remove() == 204
    output = await viewer_socket.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": 4403}
    # Everyone else stays connected.
    assert await admin_socket.receive_nothing(timeout=0.5)
    await admin_socket.disconnect()
