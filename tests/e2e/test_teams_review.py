"""End to end (issue 6): an admin lowers a team's concurrency and a member's third run waits,
with the reason, then starts on its own; a reviewer comments on a log line and gives a verdict."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from apps.runs import services as run_services
from apps.runs.models import Run
from apps.teams.models import Membership, Team
from tests.e2e.test_run_page import log_in, status_badge
from tests.projects.factories import make_project, make_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker, pytest.mark.slow]


def wait_for(run_id: int, condition, timeout: float = 90) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = Run.objects.get(pk=run_id)
        if condition(run):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} stuck at {run.status}")


def test_admin_lowers_team_concurrency_and_the_third_run_waits_then_starts(live_url, browser, page):
    make_user("root", is_staff=True)
    mia = make_user("mia")
    team = Team.objects.create(name="Ops")
    Membership.objects.create(team=team, user=mia, role="member")
    project = make_project(mia, name="Ops jobs", team=team, memory_mb=128)

    log_in(page, live_url, "root")
    page.goto(f"{live_url}/limits/?scope=team&team={team.pk}")
    page.fill("#id_max_concurrent_runs", "2")
    page.click("#limits-form button[type=submit]")
    expect(page.locator(f"#limits-team-{team.pk}")).to_contain_text("Ops")
    expect(page.locator(f"#limits-team-{team.pk} td").nth(1)).to_have_text("2")

    first, second = (
        run_services.start_run(project=project, user=mia, task="sleep 5", overrides={})
        for _ in range(2)
    )
    for run in (first, second):
        wait_for(run.pk, lambda r: r.status in (Run.Status.PROVISIONING, Run.Status.RUNNING), 60)

    member = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
    try:
        log_in(member, live_url, "mia")
        member.goto(f"{live_url}/runs/new/{project.pk}/")
        member.fill("#id_task", "echo third run")
        member.click("[data-testid=launch]")
        expect(member).to_have_url(re.compile(r"/runs/\d+/$"))
        expect(status_badge(member)).to_have_text("Queued")
        expect(member.locator("#run-header")).to_contain_text(
            "team limit 2/2 running", timeout=20_000
        )
        # One of the first two finishes; nobody touches the third: it starts and succeeds.
        expect(status_badge(member)).to_have_text("Succeeded", timeout=90_000)
        third = Run.objects.order_by("-pk").first()
        assert third.started_at >= min(
            Run.objects.get(pk=first.pk).finished_at, Run.objects.get(pk=second.pk).finished_at
        )
    finally:
        member.context.close()
    assert not page.js_errors


def test_a_reviewer_comments_on_a_log_line_and_sets_a_verdict(live_url, page):
    author = make_user("arlo")
    rita = make_user("rita")
    team = Team.objects.create(name="Review crew")
    Membership.objects.create(team=team, user=author, role="owner")
    Membership.objects.create(team=team, user=rita, role="member")
    project = make_project(author, name="Reviewed", team=team, memory_mb=128)
    run = run_services.start_run(
        project=project, user=author, task="echo alpha\necho beta\necho gamma", overrides={}
    )
    wait_for(run.pk, lambda r: r.is_terminal)

    log_in(page, live_url, "rita")
    page.goto(f"{live_url}/runs/{run.pk}/")
    expect(page.locator("#review-panel [data-testid=verdict]")).to_have_text("no verdict yet")
    expect(page.locator("#L2")).to_contain_text("beta")
    page.click("#L2 .ln-no")
    expect(page.locator("#comment-form [data-comment-target]")).to_have_text("On log line 2:")
    body = "<img src=x onerror=alert(1)> beta should say BETA"
    page.fill("#comment-form textarea[name=body]", body)
    page.click("#comment-form button[type=submit]")
    inline = page.locator('[data-review-for="line:2"]')
    expect(inline).to_contain_text(body)
    expect(inline).to_contain_text("rita")
    assert page.locator("#log-lines img").count() == 0
    expect(page.locator("#review-panel .comment")).to_contain_text("line 2")

    page.click("#review-panel button[name=verdict][value=needs_work]")
    expect(page.locator("#review-panel [data-testid=verdict]")).to_have_text("Needs work")
    # Survives a reload: the comment in place under line 2, the verdict with who and when.
    page.reload()
    expect(page.locator('[data-review-for="line:2"]')).to_contain_text("BETA")
    expect(page.locator("#review-panel")).to_contain_text("by rita")
    assert not page.js_errors, page.js_errors
    assert not page.failed_requests, page.failed_requests
