"""Paging /events gives exactly what the WebSocket replays: the same events, same order, once."""

from __future__ import annotations

import time
from unittest import mock

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import transaction

from apps.runs import services
from apps.runs.models import Run
from apps.runs.recorder import NewEvent, append_events
from sandboxweb.asgi import application
from tests.api.conftest import ApiClient, make_token
from tests.projects.factories import make_project, make_user

pytestmark = pytest.mark.django_db(transaction=True)
HEADERS = [(b"origin", b"http://localhost"), (b"host", b"localhost")]


@database_sync_to_async
def finished_run_with_events(count: int):
    owner = make_user()
    project = make_project(owner)
    with mock.patch("apps.runs.services.enqueue_run"):  # no worker: the log is written here
        run = services.start_run(project=project, user=owner, task="echo", overrides={})
    with transaction.atomic():
        append_events(
            run.pk,
            [
                NewEvent("log", time.time(), {"stream": "stdout"}, f"line {i}", i + 1, 1)
                if i % 3 == 0
                else NewEvent("note", time.time(), {"i": i, "text": "é ✓ <b>"})
                for i in range(count)
            ],
        )
    run = services.transition(run, to=Run.Status.CANCELLED, reason="cancelled")
    return owner, run, make_token(owner, ["runs:read"])


async def websocket_replay(user, run_id: int) -> list[dict]:
    communicator = WebsocketCommunicator(application, f"/ws/runs/{run_id}/", headers=HEADERS)
    communicator.scope["user"] = user
    assert (await communicator.connect())[0]
    events = []
    while True:
        message = await communicator.receive_json_from(timeout=10)
        if message["type"] == "events":
            events += message["events"]
        elif message["type"] == "run.end":
            break
    await communicator.disconnect()
    return events


def api_pages(token: str, run_id: int, limit: int) -> tuple[list[dict], int]:
    api = ApiClient(token)
    events, after, pages = [], 0, 0
    while True:
        page = api.get(f"/api/v1/runs/{run_id}/events", after=after, limit=limit).json()
        pages += 1
        events += page["events"]
        after = page["next_after"]
        if page["finished"]:
            return events, pages


async def test_event_pages_equal_the_websocket_replay(redis_server):
    owner, run, token = await finished_run_with_events(1234)
    replayed = await websocket_replay(owner, run.pk)
    paged, pages = await sync_to_async(api_pages)(token, run.pk, 100)
    assert paged == replayed
    assert [event["seq"] for event in paged] == list(range(1, run.last_seq + 1))
    assert pages == 13
