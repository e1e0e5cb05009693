"""The run socket: authorization first, replay after a seq, live events, each exactly once."""

import asyncio
import json
import time
from unittest import mock

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import transaction

from apps.runs import services
from apps.runs.models import Run
from apps.runs.recorder import NewEvent, append_events
from sandboxweb.asgi import application
from tests.projects.factories import make_project, make_user

pytestmark = pytest.mark.django_db(transaction=True)
HEADERS = [(b"origin", b"http://localhost"), (b"host", b"localhost")]


@pytest.fixture(autouse=True)
def runs_are_not_executed():
    """These runs only carry events. A worker left running by another session fixture (the e2e
    one) would otherwise execute them and append events the assertions do not expect."""
    with mock.patch("apps.runs.tasks.execute_run_task.apply_async", autospec=True):
        yield


@database_sync_to_async
def setup_run(events: int = 0):
    owner, stranger = make_user(), make_user()
    project = make_project(owner)
    run = services.start_run(project=project, user=owner, task="echo", overrides={})
    add_events(run.pk, events)
    return owner, stranger, Run.objects.get(pk=run.pk)


def add_events(run_id: int, count: int, kind: str = "note") -> int:
    with transaction.atomic():
        return append_events(run_id, [NewEvent(kind, time.time(), {"i": i}) for i in range(count)])


async def connect(user, run_id: int, after: int | None = None) -> WebsocketCommunicator:
    path = f"/ws/runs/{run_id}/" + (f"?after={after}" if after is not None else "")
    communicator = WebsocketCommunicator(application, path, headers=HEADERS)
    if user is not None:
        communicator.scope["user"] = user
    return communicator


async def receive_until(communicator, last_seq: int, timeout: float = 10) -> tuple[list[int], list]:
    """Collect event seqs until ``last_seq`` arrived; returns (seqs, other messages)."""
    seqs, others = [], []
    deadline = time.monotonic() + timeout
    while not seqs or seqs[-1] < last_seq:
        message = await communicator.receive_json_from(
            timeout=max(0.1, deadline - time.monotonic())
        )
        if message["type"] == "events":
            seqs.extend(event["seq"] for event in message["events"])
        else:
            others.append(message)
    return seqs, others


async def test_anonymous_and_strangers_are_refused_before_joining(redis_server):
    from django.contrib.auth.models import AnonymousUser

    _, stranger, run = await setup_run(3)
    for user, code in ((AnonymousUser(), 4401), (stranger, 4403)):
        communicator = await connect(user, run.pk)
        connected, close_code = await communicator.connect()
        assert (connected, close_code) == (False, code)
    missing = await connect(stranger, 999_999)
    assert (await missing.connect()) == (False, 4403)


async def test_replays_after_the_given_seq_then_streams_live_without_duplicates(redis_server):
    owner, _, run = await setup_run(10)
    assert run.last_seq == 11  # the queued status event + 10
    communicator = await connect(owner, run.pk, after=4)
    connected, _ = await communicator.connect()
    assert connected
    seqs, _ = await receive_until(communicator, 11)
    assert seqs == list(range(5, 12))
    last = await database_sync_to_async(add_events)(run.pk, 5)
    seqs, _ = await receive_until(communicator, last)
    assert seqs == list(range(12, last + 1))
    # A ping makes the server look again; nothing is sent twice.
    await communicator.send_json_to({"type": "ping"})
    pong = await communicator.receive_json_from(timeout=5)
    assert pong == {"type": "pong", "last_seq": last}
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


async def test_large_backlogs_arrive_in_pages_each_event_once(redis_server):
    owner, _, run = await setup_run(1200)
    communicator = await connect(owner, run.pk, after=0)
    assert (await communicator.connect())[0]
    seqs, _ = await receive_until(communicator, 1201)
    assert seqs == list(range(1, 1202))
    await communicator.disconnect()


async def test_lost_notices_only_delay_delivery(redis_server):
    owner, _, run = await setup_run(2)
    communicator = await connect(owner, run.pk, after=3)
    assert (await communicator.connect())[0]
    with mock.patch("apps.runs.recorder.notify_run"):  # the channel layer dropped the bell
        last = await database_sync_to_async(add_events)(run.pk, 3)
    started = time.monotonic()
    seqs, _ = await receive_until(communicator, last, timeout=10)
    assert seqs == [4, 5, 6]
    assert time.monotonic() - started < 5  # the consumer's own poll found them
    await communicator.disconnect()


async def test_a_finished_run_replays_everything_then_ends_the_stream(redis_server):
    owner, _, run = await setup_run(3)

    @database_sync_to_async
    def finish():
        return services.transition(run, to=Run.Status.CANCELLED, reason="cancelled").last_seq

    last = await finish()
    communicator = await connect(owner, run.pk)
    assert (await communicator.connect())[0]
    seqs, others = await receive_until(communicator, last)
    assert seqs == list(range(1, last + 1))
    if not others:
        others.append(await communicator.receive_json_from(timeout=5))
    assert others == [
        {"type": "run.end", "status": "cancelled", "end_reason": "cancelled", "last_seq": last}
    ]
    assert (await communicator.receive_output(timeout=5))["type"] == "websocket.close"


async def test_resuming_at_the_end_of_a_finished_run_sends_only_the_end(redis_server):
    owner, _, run = await setup_run(1)

    @database_sync_to_async
    def finish():
        return services.transition(run, to=Run.Status.CANCELLED, reason="cancelled").last_seq

    last = await finish()
    communicator = await connect(owner, run.pk, after=last)
    assert (await communicator.connect())[0]
    message = await communicator.receive_json_from(timeout=5)
    assert message["type"] == "run.end" and message["last_seq"] == last
    await asyncio.sleep(0)


async def test_big_pages_are_split_into_messages_daphne_can_send(redis_server):
    owner, _, run = await setup_run(0)

    @database_sync_to_async
    def add_heavy_logs() -> int:
        # Escape codes cost 6 bytes each in JSON: 10 events of 128 KiB would be ~7 MiB.
        text = "\x1b[31m" * (128 * 1024 // 5)
        with transaction.atomic():
            return append_events(
                run.pk,
                [
                    NewEvent("log", time.time(), {"stream": "stdout"}, text, 1 + i, 1)
                    for i in range(10)
                ],
            )

    last = await add_heavy_logs()
    communicator = await connect(owner, run.pk, after=0)
    assert (await communicator.connect())[0]
    seqs, sizes = [], []
    while not seqs or seqs[-1] < last:
        raw = await communicator.receive_from(timeout=10)
        sizes.append(len(raw.encode()))
        seqs.extend(event["seq"] for event in json.loads(raw)["events"])
    assert seqs == list(range(1, last + 1))
    assert len(sizes) > 1 and max(sizes) < 1024 * 1024
    await communicator.disconnect()
