"""The product as users get it: daphne (ASGI) + a Celery worker + headless Chromium.

Both servers are subprocesses seeing the test database; tests using them must be
``django_db(transaction=True)`` so what they create is committed. Screenshots go to
test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, child_environment

ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def anthropic_server():
    from tests.support.anthropic_server import AnthropicServer

    with AnthropicServer() as server:
        yield server


@pytest.fixture(scope="session")
def e2e_worker(
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
            tmp_path_factory.mktemp("e2e-worker"), anthropic_url=anthropic_server.base_url
        ) as process,
    ):
        yield process


@pytest.fixture(scope="session")
def live_url(e2e_worker, django_db_blocker, tmp_path_factory) -> Iterator[str]:
    """The real ASGI server (daphne), enqueueing onto the e2e worker's queue."""
    from django.core.management import call_command

    call_command("collectstatic", interactive=False, verbosity=0)
    port = free_port()
    log_path = Path(tmp_path_factory.mktemp("daphne")) / "daphne.log"
    with django_db_blocker.unblock():
        environment = child_environment(CELERY_QUEUE=e2e_worker.queue)
    handle = log_path.open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "sandboxweb.asgi:application",
        ],
        cwd=REPO_ROOT,
        env=environment,
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180  # an upper bound on a hang, not a speed claim
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"daphne exited: {log_path.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/login/", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.3)
    try:
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread; the ORM calls of the
    # tests are still plain synchronous code, so Django's async-context guard must stand aside.
    # Function scope: pytest-django reorders tests, and a loop left running by a session-wide
    # browser would break every async (WebSocket) test that happens to run after it.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
            )
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and not message.text.startswith("Failed to load resource")
            else None
        ),
    )
    failed: list[str] = []
    page.on(
        "response",
        lambda response: (
            failed.append(f"{response.status} {response.request.method} {response.url}")
            if response.status >= 400 and not response.url.endswith("/favicon.ico")
            else None
        ),
    )
    page.js_errors = errors  # type: ignore[attr-defined]
    page.failed_requests = failed  # type: ignore[attr-defined]
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        page.screenshot(path=str(ARTIFACTS / f"failed-{request.node.name}.png"), full_page=True)
    context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
