"""Limits with a real Celery worker, Docker and the loopback model API."""

from __future__ import annotations

import time

import pytest

from apps.limits import services as limit_services
from apps.runs import services as run_services
from apps.runs.models import Run
from apps.teams.models import Membership, Team
from tests.projects.factories import make_project, make_user
from tests.support.anthropic_server import Reply, text, tool_use

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker, pytest.mark.slow]
S = Run.Status


def wait_for(run_id: int, condition, timeout: float = 90) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = Run.objects.get(pk=run_id)
        if condition(run):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id}: {run.status} {run.status_message!r}")


def test_a_run_over_the_team_limit_waits_then_starts_when_a_slot_frees(worker):
    user = make_user()
    team = Team.objects.create(name=f"Q{user.pk}")
    Membership.objects.create(team=team, user=user, role="owner")
    project = make_project(user, team=team, memory_mb=128)
    limit_services.save_policy(
        actor=None, scope="team", team=team, values={"max_concurrent_runs": 1}
    )
    first = run_services.start_run(project=project, user=user, task="sleep 3", overrides={})
    wait_for(first.pk, lambda r: r.status in (S.PROVISIONING, S.RUNNING))
    second = run_services.start_run(project=project, user=user, task="echo second", overrides={})
    waiting = wait_for(second.pk, lambda r: r.status_message == "team limit 1/1 running", 30)
    assert waiting.status == S.QUEUED
    done = wait_for(first.pk, lambda r: r.is_terminal)
    assert done.status == S.SUCCEEDED
    # Nobody enqueues it by hand: the finishing run frees the slot and wakes it.
    second = wait_for(second.pk, lambda r: r.is_terminal, 60)
    assert second.status == S.SUCCEEDED and second.started_at >= done.finished_at
    reasons = list(second.events.filter(type="status").values_list("data__message", flat=True))
    assert "team limit 1/1 running" in reasons


def test_monthly_token_budget_ends_an_agent_run_with_reason_budget(worker, anthropic_server):
    user = make_user()
    project = make_project(
        user, default_kind="agent", system_prompt="You are a test agent.", max_turns=10
    )
    limit_services.save_policy(
        actor=None, scope="user", user=user, values={"monthly_token_budget": 3000}
    )
    big = {"input_tokens": 2500, "output_tokens": 1000}
    anthropic_server.set_script(
        [
            Reply([tool_use("Bash", {"command": "echo one"})], usage=big),
            Reply([tool_use("Bash", {"command": "echo two"})], usage=big),
            Reply([text("done")]),
        ]
    )
    run = run_services.start_run(project=project, user=user, task="Spend tokens.", overrides={})
    assert run.config["max_tokens_total"] == 3000
    run = wait_for(run.pk, lambda r: r.is_terminal)
    assert (run.status, run.end_reason) == (S.FAILED, "budget"), run.error_message
    assert run.total_tokens >= 3000
    with pytest.raises(Exception, match="token budget is used up"):
        run_services.start_run(project=project, user=user, task="More.", overrides={})
