"""The Content-Security-Policy holds on every main page and nothing the pages do breaks it.

A listener installed before any page script reports every ``securitypolicyviolation`` event to
the test (Chromium also logs each refusal as a console error, which the ``page`` fixture
collects). Walking the pages as a staff user, with a run streaming live, must produce none — and
the features that used to need inline code (the usage page's team picker, the live socket, htmx
swaps) must still work under the policy.
"""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from apps.runs import services as run_services
from apps.runs.models import Run
from apps.teams.models import Membership, Team
from tests.e2e.test_run_page import log_in, rendered_lines
from tests.projects.factories import make_project, make_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker, pytest.mark.slow]

REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolation([event.violatedDirective, event.blockedURI, event.sourceFile,
                       event.lineNumber, location.pathname].join(" | "));
});
"""
# Printed slowly so the run page is watched while the socket streams.
SLOW_PRINTER = "for i in $(seq 1 40); do echo tick $i; sleep 0.2; done"


def wait_for(run_id: int, statuses: set[str], timeout: float = 90) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = Run.objects.get(pk=run_id)
        if run.status in statuses:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} stuck at {run.status}")


def test_no_page_violates_the_content_security_policy(live_url, page):
    violations: list[str] = []
    page.expose_function("cspViolation", lambda text: violations.append(text))
    page.add_init_script(REPORT_VIOLATIONS)
    headers: dict[str, str] = {}
    page.on(
        "response",
        lambda response: (
            headers.__setitem__(response.url, response.headers.get("content-security-policy"))
            if response.request.resource_type == "document"
            else None
        ),
    )

    root = make_user("cspadmin", is_staff=True, is_superuser=True)
    team = Team.objects.create(name="CSP team")
    Membership.objects.create(team=team, user=root, role="admin")
    project = make_project(root, name="CSP project", team=team)
    done = run_services.start_run(project=project, user=root, task="echo first", overrides={})
    wait_for(done.pk, {Run.Status.SUCCEEDED})

    log_in(page, live_url, "cspadmin")
    for path in (
        "/",
        "/projects/",
        f"/projects/{project.pk}/",
        f"/runs/new/{project.pk}/",
        "/runs/",
        f"/runs/{done.pk}/",
        "/teams/",
        f"/teams/{team.pk}/",
        "/limits/",
        "/limits/usage/",
        "/audit/",
        "/settings/tokens/",
        "/review/",
        "/admin/",
        "/admin/auth/user/",
    ):
        page.goto(live_url + path)
        expect(page.locator("main.content, #content").first).to_be_visible()

    # The launch form (its script toggles fields) and a live run page: the socket streams.
    page.goto(f"{live_url}/runs/new/{project.pk}/")
    page.check("input[name=kind][value=script]")
    page.fill("#id_task", SLOW_PRINTER)
    page.click("[data-testid=launch]")
    expect(page).to_have_url(re.compile(r"/runs/\d+/$"))
    live = int(re.search(r"/runs/(\d+)/", page.url).group(1))
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('#log-lines .ln-tx'))"
        ".some(cell => cell.textContent.includes('tick 3'))",
        timeout=60_000,
    )
    assert wait_for(live, {Run.Status.RUNNING, Run.Status.SUCCEEDED}).status in {
        Run.Status.RUNNING,
        Run.Status.SUCCEEDED,
    }
    wait_for(live, {Run.Status.SUCCEEDED})
    expect(page.locator("[data-testid=run-status]")).to_have_text("Succeeded", timeout=30_000)
    assert any("tick 40" in text for _n, text in rendered_lines(page))

    # Compare (a GET form on the history page) and the usage page's team picker, which
    # submits on change from static/js/autosubmit.js instead of an inline onchange.
    page.goto(f"{live_url}/review/compare/?run={done.pk}&run={live}")
    expect(page.locator("main.content")).to_contain_text("Files in the workspace")
    page.goto(f"{live_url}/limits/usage/")
    page.select_option("select[name=team]", str(team.pk))
    expect(page).to_have_url(re.compile(rf"team={team.pk}"))
    expect(page.locator("h1")).to_contain_text("CSP team")

    # The API docs: Swagger UI renders from static files under the same policy.
    page.goto(f"{live_url}/api/v1/docs")
    expect(page.locator(".swagger-ui .info .title")).to_be_visible(timeout=30_000)

    assert violations == [], violations
    assert not [e for e in page.js_errors if "Content Security Policy" in e], page.js_errors

    # The listener works (this test can fail): an injected inline script is refused, reported.
    page.goto(f"{live_url}/")
    page.evaluate(
        "() => { const s = document.createElement('script');"
        " s.textContent = 'window.inlineRan = true'; document.body.appendChild(s); }"
    )
    page.wait_for_function("() => true")
    deadline = time.monotonic() + 10
    while not violations and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert len(violations) == 1 and violations[0].startswith("script-src"), violations
    assert page.evaluate("window.inlineRan") is None
    pages = [url for url, policy in headers.items() if url.startswith(live_url)]
    assert len(pages) >= 18
    for url in pages:
        policy = headers[url] or ""
        assert "script-src 'self'" in policy, (url, policy)
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, (url, policy)
        assert "frame-ancestors 'none'" in policy, (url, policy)
