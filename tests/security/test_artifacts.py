"""Captured files that are HTML or SVG with script (§2.2 row 41), through the live server.

The agent writes ``report.html`` / ``report.svg`` / a page posing as plain text; a user clicks
them on the run page or in the API. They must download (attachment), never be sniffed into HTML
(nosniff), and even a browser that rendered one must run it without script or same-origin
access (``Content-Security-Policy: sandbox``). Chromium navigated to every download URL runs
nothing. The zip of all artifacts holds no name an unzip tool would place outside its folder.
"""

from __future__ import annotations

import io
import zipfile

import pytest

from apps.runs import services
from apps.runs.models import Artifact, Run
from tests.api.conftest import make_token
from tests.e2e.conftest import (  # noqa: F401 - fixtures: daphne + Chromium
    browser,
    live_url,
    page,
)
from tests.e2e.test_run_page import log_in
from tests.projects.factories import make_project, make_user
from tests.security.conftest import wait_done

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="session")
def e2e_worker(attack_worker):
    """live_url's worker is the attack suite's (tests/security/conftest.py): one worker process
    for the whole suite instead of one more per module on a loaded host."""
    return attack_worker


PAYLOAD = "<script>window.__pwned=1;alert(document.domain)</script>"
FILES = {
    "out/report.html": f"<!doctype html><html><body><h1>Report</h1>{PAYLOAD}</body></html>",
    "out/report.svg": (
        '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(2)">'
        "<script>window.__pwned=2;alert(2)</script></svg>"
    ),
    "out/notes.txt": f"<html>{PAYLOAD}</html>",  # text/plain that a sniffer would call HTML
    "out/data.json": f'{{"x": "{PAYLOAD}"}}',
    # One file on Linux; "two folders up" to a Windows unzip tool.
    "out/..\\..\\evil.bat": "echo owned",
    "out/C:evil.txt": "drive-relative on Windows",
}


@pytest.fixture
def captured(live_url):  # noqa: F811
    user = make_user("henry")
    project = make_project(user, name="Reports", capture_patterns=["out/**"])
    commands = ["mkdir -p out"]
    for path, content in FILES.items():
        # printf %s: the content is data, never a format; single quotes hold everything here.
        commands.append(f"printf '%s' '{content}' > '{path}'")
    run = services.start_run(
        project=project, user=user, task="\n".join(commands), overrides={}, kind="script"
    )
    run = wait_done([run.pk], timeout=90)[run.pk]
    assert run.status == Run.Status.SUCCEEDED, (run.status, run.error_message)
    artifacts = {a.path: a for a in Artifact.objects.filter(run=run)}
    assert set(artifacts) == set(FILES)
    return user, run, artifacts


def test_script_artifacts_download_inert_and_chromium_runs_none_of_them(
    live_url,  # noqa: F811
    page,  # noqa: F811
    captured,
):
    user, run, artifacts = captured
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    log_in(page, live_url, user.username)
    token = make_token(user)

    for path, artifact in artifacts.items():
        urls = [
            (f"/runs/{run.pk}/artifacts/{artifact.pk}/download/", {}),
            (
                f"/api/v1/runs/{run.pk}/artifacts/{artifact.pk}/download",
                {"Authorization": f"Bearer {token}"},
            ),
        ]
        for url, headers in urls:
            response = page.request.get(live_url + url, headers=headers)
            assert response.status == 200, (url, response.status)
            assert response.body() == FILES[path].encode()
            got = response.headers
            assert got["content-disposition"].startswith("attachment"), (url, got)
            assert got["x-content-type-options"] == "nosniff", url
            assert got["content-security-policy"] == "sandbox", url
            if path.endswith((".html", ".svg")):
                assert got["content-type"] == "application/octet-stream", (url, got)

        # What a user gets clicking the link: a download, not a rendered page.
        with page.expect_download() as download:
            page.evaluate(
                "url => { const a = document.createElement('a'); a.href = url;"
                " document.body.appendChild(a); a.click(); }",
                f"/runs/{run.pk}/artifacts/{artifact.pk}/download/",
            )
        saved_as = download.value.suggested_filename
        assert saved_as and "/" not in saved_as and "\\" not in saved_as, saved_as

        # The in-page viewer shows the file as text.
        page.goto(f"{live_url}/runs/{run.pk}/artifacts/{artifact.pk}/")
        if path.endswith((".html", ".svg", ".txt", ".json")):
            assert FILES[path] in page.locator("pre.viewer-body").inner_text()
        assert page.locator("script:not([src]), svg, img, iframe").count() == 0

    # A page served with "CSP: sandbox" that the browser did render anyway runs no script:
    # Chromium asked for the raw URL through a route that drops Content-Disposition.
    html = artifacts["out/report.html"]
    url = f"{live_url}/runs/{run.pk}/artifacts/{html.pk}/download/"

    def inline(route) -> None:
        response = route.fetch()
        headers = {k: v for k, v in response.headers.items() if k != "content-disposition"}
        headers["content-type"] = "text/html"
        route.fulfill(response=response, headers=headers)

    page.route(url, inline)
    page.goto(url)
    assert page.locator("h1").inner_text() == "Report"  # it did render: the check means something
    page.wait_for_timeout(300)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert dialogs == []

    # The zip: every name stays inside the folder it is extracted to, on any system.
    response = page.request.get(f"{live_url}/runs/{run.pk}/artifacts.zip")
    assert response.headers["content-disposition"].startswith("attachment")
    assert response.headers["x-content-type-options"] == "nosniff"
    names = zipfile.ZipFile(io.BytesIO(response.body())).namelist()
    assert len(names) == len(FILES)
    for name in names:
        parts = name.replace("\\", "/").split("/")
        assert ".." not in parts and not name.startswith("/") and ":" not in name, name
    assert "out/.._.._evil.bat" in names
