"""End to end in headless Chromium: the real ASGI server, a real worker, real sandboxes."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from apps.runs.models import Run
from tests.e2e.conftest import ARTIFACTS
from tests.projects.factories import PASSWORD, make_project, make_user
from tests.support.anthropic_server import Reply, text, tool_use

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker, pytest.mark.slow]

# 5,000 coloured lines over ~8 s (so they arrive while we watch), then files.
PRINTER = (
    r"for i in $(seq 1 5000); do printf '\033[3%dmline %05d\033[0m\n' $((i%7+1)) $i;"
    r" if [ $((i%250)) -eq 0 ]; then sleep 0.4; fi; done"
)
WRITER = "mkdir -p out/data && echo '# Report' > out/report.md && seq 1 100 > out/data/n.txt"


def log_in(page, live_url: str, username: str) -> None:
    page.goto(f"{live_url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator(".usermenu")).to_contain_text(username)


def rendered_lines(page) -> list[list]:
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('#log-lines .ln')).map(
            row => [Number(row.dataset.n), row.querySelector('.ln-tx').textContent])"""
    )


def canvas_has_ink(page, name: str) -> bool:
    return page.evaluate(
        """name => {
            const canvas = document.querySelector(`canvas[data-chart="${name}"]`);
            const context = canvas.getContext('2d');
            const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
            for (let i = 3; i < data.length; i += 4) if (data[i] > 0) return true;
            return false;
        }""",
        name,
    )


def status_badge(page):
    return page.locator("[data-testid=run-status]")


def test_script_run_streams_live_survives_reload_and_reconnect_and_shows_everything(live_url, page):
    make_user("erin")
    log_in(page, live_url, "erin")

    # Create a project through the UI (one invalid submit first: errors come back on the form).
    page.goto(f"{live_url}/projects/new/")
    page.fill("#id_name", "")
    page.click("button.primary")
    expect(page.locator(".alert.bad")).to_contain_text("Please fix")
    page.fill("#id_name", "Printer")
    page.check("input[name=default_kind][value=script]")
    page.fill("#id_memory_mb", "256")
    page.fill("#id_cpu_cores", "0.5")
    page.fill("#id_capture_text", "out/**")
    page.click("button.primary")
    expect(page.locator("h1")).to_contain_text("Printer")

    # Launch a script run.
    page.click("text=Launch run")
    page.check("input[name=kind][value=script]")
    page.fill("#id_task", f"{PRINTER}\n{WRITER}")
    page.click("[data-testid=launch]")
    expect(page).to_have_url(re.compile(r"/runs/\d+/$"))
    run_id = int(re.search(r"/runs/(\d+)/", page.url).group(1))

    # Lines arrive while the run is running.
    page.wait_for_selector("#L300", timeout=60_000)
    expect(status_badge(page)).to_have_text("Running")
    expect(page.locator("[data-testid=live-pill]")).to_have_text("Live")
    assert Run.objects.get(pk=run_id).log_lines < 5000

    # A network blip: the page reconnects from its last seq.
    page.evaluate("window.sandboxRunPage.state.socket.close()")
    expect(page.locator("[data-testid=live-pill]")).to_have_text(re.compile("Reconnecting|Live"))
    expect(page.locator("[data-testid=live-pill]")).to_have_text("Live", timeout=15_000)

    # Scrolling up pauses follow mode; new lines are counted on a chip that brings you back.
    page.evaluate("document.getElementById('log-view').scrollTop = 0")
    expect(page.locator("[data-testid=new-lines]")).to_be_visible(timeout=15_000)
    expect(page.locator("[data-testid=new-lines]")).to_contain_text(re.compile(r"\d+ new lines"))
    page.click("[data-testid=new-lines]")
    expect(page.locator("[data-testid=new-lines]")).to_be_hidden()
    assert page.evaluate(
        "(() => { const v = document.getElementById('log-view');"
        " return v.scrollHeight - v.scrollTop - v.clientHeight < 60; })()"
    )

    # Reload in the middle of the run.
    page.wait_for_selector("#L1500", timeout=60_000)
    assert Run.objects.get(pk=run_id).status == Run.Status.RUNNING
    page.reload()
    page.wait_for_selector("#log-lines .ln", timeout=30_000)
    expect(page.locator("[data-testid=live-pill]")).to_have_text(re.compile("Live|Finished"))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "run-page-script-live.png"))

    expect(status_badge(page)).to_have_text("Succeeded", timeout=90_000)
    page.wait_for_selector("#L5000")
    # Scroll back to the start: every line exactly once, in order, coloured.
    for _ in range(10):
        if page.locator("#log-earlier").is_hidden():
            break
        page.click("#log-earlier")
        page.wait_for_timeout(300)
    lines = rendered_lines(page)
    assert [n for n, _ in lines] == list(range(1, len(lines) + 1))
    assert [t for _, t in lines[:5000]] == [f"line {i:05d}" for i in range(1, 5001)]
    assert page.locator("#L4321 .ln-tx span.a-fg-3").count() == 1  # 4321 % 7 + 1 = 3

    # File tree, artifacts and graphs.
    expect(page.locator("[data-testid=file-tree]")).to_contain_text("report.md")
    expect(page.locator("[data-testid=file-tree]")).to_contain_text("n.txt")
    expect(page.locator("[data-testid=artifacts-zip]")).to_be_visible()
    expect(page.locator("#resources-note")).to_have_text(re.compile(r"[1-9]\d* samples?"))
    assert canvas_has_ink(page, "memory") and canvas_has_ink(page, "cpu")

    # Search the whole log on the server and jump to a hit.
    page.fill("[data-testid=log-search]", "line 04321")
    page.press("[data-testid=log-search]", "Enter")
    expect(page.locator("[data-testid=search-results]")).to_contain_text("1 matching line")
    page.click("[data-testid=search-results] a[data-jump-line='4321']")
    expect(page.locator("#L4321")).to_have_class(re.compile(r"\bhl\b"))
    page.screenshot(path=str(ARTIFACTS / "run-page-script.png"), full_page=True)

    # The captured file opens in the viewer.
    page.click("[data-testid=file-tree] a.tree-name:has-text('report.md')")
    expect(page.locator("#file-viewer")).to_contain_text("# Report")
    page.keyboard.press("Escape")

    # Timestamps toggle (remembered by the browser).
    expect(page.locator("#L4321 .ln-ts")).to_be_hidden()
    page.check("#ts-toggle")
    expect(page.locator("#L4321 .ln-ts")).to_be_visible()
    page.uncheck("#ts-toggle")

    # A permalink to a line outside the loaded tail loads it and highlights it.
    page.goto(f"{live_url}/runs/")
    expect(page.locator("#history-table")).to_contain_text(f"#{run_id}")
    page.goto(f"{live_url}/runs/{run_id}/#L10")
    expect(page.locator("#L10")).to_have_class(re.compile(r"\bhl\b"), timeout=15_000)

    # A finished run's page is the same page, replayed: graphs and tree are still there.
    page.goto(f"{live_url}/runs/{run_id}/")
    expect(page.locator("[data-testid=live-pill]")).to_have_text("Finished")
    expect(page.locator("#resources-note")).to_have_text(re.compile(r"[1-9]\d* samples?"))
    assert canvas_has_ink(page, "memory")
    expect(page.locator("[data-testid=file-tree]")).to_contain_text("report.md")
    assert [n for n, _ in rendered_lines(page)] == list(range(4001, 5001))  # the tail
    page.screenshot(path=str(ARTIFACTS / "run-page-finished.png"), full_page=True)
    assert not page.js_errors, page.js_errors
    assert [r for r in page.failed_requests if "/projects/new/" not in r] == []


def test_cancel_from_the_run_page(live_url, page):
    user = make_user("frank")
    project = make_project(user, name="Sleeper")
    log_in(page, live_url, "frank")
    page.goto(f"{live_url}/runs/new/{project.pk}/")
    page.fill("#id_task", "echo started && sleep 300")
    page.click("[data-testid=launch]")
    page.wait_for_selector("#L1", timeout=60_000)
    expect(status_badge(page)).to_have_text("Running")
    page.click("[data-testid=cancel]")
    expect(status_badge(page)).to_have_text("Cancelled", timeout=20_000)
    expect(page.locator("[data-testid=end-reason]")).to_have_text("Cancelled")
    page.screenshot(path=str(ARTIFACTS / "run-page-cancelled.png"), full_page=True)
    assert not page.js_errors, page.js_errors
    assert page.failed_requests == []


def test_agent_run_shows_its_timeline_tokens_and_files(live_url, page, anthropic_server):
    user = make_user("grace")
    project = make_project(
        user,
        name="Agent",
        default_kind="agent",
        system_prompt="You are a careful engineer.",
        capture_patterns=["*.md"],
        max_turns=6,
        max_tokens_total=200_000,
    )
    anthropic_server.set_script(
        [
            Reply(
                [
                    text("I'll check the workspace first."),
                    tool_use("Bash", {"command": "printf '\\033[32mok\\033[0m\\n'; ls -la"}),
                ]
            ),
            Reply(
                [tool_use("Write", {"file_path": "NOTES.md", "content": "# Notes\nAll good.\n"})]
            ),
            Reply([tool_use("Bash", {"command": "rm -rf /"})]),
            Reply([text("Done. I wrote NOTES.md with a summary.")]),
        ]
    )
    log_in(page, live_url, "grace")
    page.goto(f"{live_url}/runs/new/{project.pk}/")
    expect(page.locator("[data-kind-label=agent]")).to_be_visible()
    page.fill("#id_task", "Write a NOTES.md file.")
    page.click("[data-testid=launch]")
    expect(status_badge(page)).to_have_text("Succeeded", timeout=90_000)
    timeline = page.locator("[data-testid=timeline]")
    expect(timeline).to_contain_text("Turn 3")
    expect(timeline).to_contain_text("Write")
    expect(timeline).to_contain_text("Done. I wrote NOTES.md")
    expect(timeline.locator(".tl-tool")).to_have_count(3)
    expect(timeline.locator(".tl-tool.is-blocked")).to_have_count(1)
    expect(page.locator("#run-header")).to_contain_text("/ 200k")
    expect(page.locator("[data-testid=file-tree]")).to_contain_text("NOTES.md")
    expect(page.locator("#log-lines")).to_contain_text("ok")
    page.locator(".tl-tool").first.locator("summary").click()
    page.screenshot(path=str(ARTIFACTS / "run-page-agent.png"), full_page=True)
    assert not page.js_errors, page.js_errors
    assert page.failed_requests == []
