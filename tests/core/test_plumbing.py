"""The real parts talk to each other: Celery over Redis, the channel layer, Docker, /healthz."""

import json

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model

import docker
from apps.core.consumers import SYSTEM_GROUP
from apps.core.tasks import echo
from sandboxweb.asgi import application


def test_celery_task_round_trips_through_redis_to_a_worker_process(celery_worker):
    import os

    result = echo.apply_async(args=["hello"], queue=celery_worker.queue)
    answer = result.get(timeout=30)
    assert answer["value"] == "hello"
    assert answer["worker_pid"] != os.getpid()
    assert celery_worker.process.poll() is None


@pytest.mark.django_db(transaction=True)
async def test_channel_layer_message_reaches_a_websocket(redis_server):
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"].startswith("channels_redis")
    user = await database_sync_to_async(get_user_model().objects.create_user)(
        "ws-user", password="pw-123456!"
    )
    communicator = WebsocketCommunicator(
        application,
        "/ws/ping/",
        headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")],
    )
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}
    await get_channel_layer().group_send(SYSTEM_GROUP, {"type": "system.message", "text": "hi"})
    assert await communicator.receive_json_from(timeout=5) == {"type": "system", "text": "hi"}
    await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_websocket_refuses_anonymous_and_foreign_origin(redis_server):
    anonymous = WebsocketCommunicator(
        application,
        "/ws/ping/",
        headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")],
    )
    connected, code = await anonymous.connect()
    assert not connected
    assert code == 4401
    foreign = WebsocketCommunicator(
        application,
        "/ws/ping/",
        headers=[(b"origin", b"http://evil.example"), (b"host", b"localhost")],
    )
    connected, _ = await foreign.connect()
    assert not connected


def test_docker_answers_and_the_sandbox_image_runs_python_as_uid_1000(docker_engine):
    client = docker.from_env()
    try:
        output = client.containers.run(
            settings.SANDBOX_IMAGE,
            ["sh", "-c", "python3 --version && id -u && id -g && stat -c %u:%g /workspace"],
            remove=True,
            network_mode="none",
            cap_drop=["ALL"],
        ).decode()
    finally:
        client.close()
    lines = output.split()
    assert lines[0] == "Python" and lines[1].startswith("3.")
    assert lines[2:] == ["1000", "1000", "1000:1000"]


@pytest.mark.django_db
def test_healthz_reports_every_part_as_json(client, docker_engine, redis_server):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = json.loads(response.content)
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "redis", "docker"}
    assert all(check["ok"] for check in body["checks"].values())
    assert "version" not in body["checks"]["docker"]  # anonymous callers get no versions
    client.force_login(get_user_model().objects.create_user("ops", password="x-long-pass-9"))
    detailed = json.loads(client.get("/healthz").content)
    assert detailed["checks"]["docker"]["version"]
    assert detailed["checks"]["redis"]["latency_ms"] is not None


@pytest.mark.django_db
def test_healthz_names_the_part_that_is_down(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/healthz")
    assert response.status_code == 503
    body = json.loads(response.content)
    assert body["status"] == "degraded"
    assert body["checks"]["redis"]["ok"] is False
    assert "REDIS_URL" in body["checks"]["redis"]["message"]
    assert body["checks"]["database"]["ok"] is True


@pytest.mark.django_db
def test_home_page_needs_login_then_shows_the_parts(client, docker_engine, redis_server):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")
    get_user_model().objects.create_user("dev", password="a-long-password-1")
    response = client.post("/login/", {"username": "dev", "password": "a-long-password-1"})
    assert response.status_code == 302
    page = client.get("/")
    assert page.status_code == 200
    html = page.content.decode()
    for part in ("Database", "Redis", "Docker"):
        assert part in html
    assert "Unavailable" not in html
    assert "htmx" in html  # htmx 2 comes from django-htmx, not a CDN
