"""Limits at launch (refuse/clamp, naming the limit), at admission (queue with a reason, FIFO,
exactly-as-many under racing claims) and budgets."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import close_old_connections, connection, transaction
from django.urls import reverse

from apps.limits import services as limit_services
from apps.limits.models import LimitPolicy
from apps.runs import services as run_services
from apps.runs.models import Run
from apps.teams.models import Membership, Team
from tests.projects.factories import PASSWORD, make_project, make_user

S = Run.Status


@pytest.fixture
def no_broker(monkeypatch):
    """Runs stay queued for these tests: enqueueing is recorded, not sent to Celery."""
    sent: list[int] = []
    monkeypatch.setattr(run_services, "enqueue_run", lambda run_id: sent.append(run_id))
    return sent


def limits(scope, *, team=None, user=None, **values):
    return limit_services.save_policy(actor=None, scope=scope, team=team, user=user, values=values)


def test_a_member_asking_for_memory_above_the_team_limit_gets_a_form_error_naming_it(
    world, client, no_broker
):
    limits("team", team=world.team, max_memory_mb=512)
    assert client.login(username="member", password=PASSWORD)
    response = client.post(
        reverse("runs:launch", args=[world.project.pk]),
        {"kind": "script", "task": "echo", "memory_mb": 1024},
    )
    assert response.status_code == 400
    errors = response.context["form"].errors["memory_mb"]
    assert errors == ["Memory 1024 MB is above the team Alpha limit of 512 MB."]
    assert not Run.objects.exists()


def test_user_override_wins_over_team_and_instance(world, no_broker):
    limits("instance", max_memory_mb=2048, max_concurrent_runs=5)
    limits("team", team=world.team, max_memory_mb=512)
    limits("user", user=world.member, max_memory_mb=768)
    with pytest.raises(ValidationError, match="your user limit of 768 MB"):
        run_services.start_run(
            project=world.project, user=world.member, task="echo", overrides={"memory_mb": 1000}
        )
    run = run_services.start_run(
        project=world.project, user=world.admin, task="echo", overrides={"memory_mb": 500}
    )
    assert run.config["memory_mb"] == 500


def test_project_defaults_above_a_limit_are_clamped_with_a_note(world, no_broker):
    world.project.memory_mb = 1024
    world.project.save()
    limits("team", team=world.team, max_memory_mb=300, max_timeout_seconds=60)
    run = run_services.start_run(
        project=world.project, user=world.member, task="echo", overrides={}
    )
    assert run.config["memory_mb"] == 300 and run.config["timeout_seconds"] == 60
    assert any("team Alpha limit" in note for note in run.config["clamp_notes"])


def test_disallowed_image_network_and_provider_are_refused(world, no_broker):
    limits(
        "team",
        team=world.team,
        allowed_images=["python:3.*"],
        allowed_network_modes=["none"],
        allowed_providers=["e2b"],
    )
    with pytest.raises(ValidationError) as caught:
        run_services.start_run(
            project=world.project,
            user=world.member,
            task="echo",
            overrides={"network_mode": "bridge"},
        )
    errors = caught.value.message_dict
    assert "allowed images: python:3.*" in errors["image"][0]
    assert "allowed network modes: none" in errors["network_mode"][0]
    assert "allowed providers: e2b" in errors["provider"][0]


def test_a_spent_monthly_budget_refuses_launches_and_caps_the_next_run(world, no_broker):
    limits("user", user=world.member, monthly_token_budget=1000, monthly_cost_budget_usd="5.00")
    first = run_services.start_run(
        project=world.project, user=world.member, task="echo", overrides={}
    )
    assert first.config["max_tokens_total"] == 1000 and first.config["max_cost_usd"] == 5.0
    Run.objects.filter(pk=first.pk).update(total_tokens=600, cost_usd=Decimal("1.5"))
    second = run_services.start_run(
        project=world.project, user=world.member, task="echo", overrides={}
    )
    assert second.config["max_tokens_total"] == 400 and second.config["max_cost_usd"] == 3.5
    Run.objects.filter(pk=second.pk).update(total_tokens=400)
    with pytest.raises(ValidationError, match="Your monthly token budget is used up"):
        run_services.start_run(project=world.project, user=world.member, task="echo", overrides={})


def test_a_queued_run_whose_budget_was_spent_while_waiting_ends_with_reason_budget(
    world, no_broker
):
    limits("team", team=world.team, monthly_token_budget=1000)
    run = run_services.start_run(
        project=world.project, user=world.member, task="echo", overrides={}
    )
    earlier = run_services.start_run(
        project=world.private, user=world.owner, task="x", overrides={}
    )
    Run.objects.filter(pk=earlier.pk).update(project=world.project, total_tokens=5000)
    assert run_services.claim_run(run_id=run.pk, lease_owner="w1") is None
    run.refresh_from_db()
    assert (run.status, run.end_reason) == (S.FAILED, "budget")
    assert "token budget is used up" in run.error_message


def test_over_the_team_limit_a_run_waits_with_the_reason_then_goes_first(
    world, no_broker, django_capture_on_commit_callbacks
):
    limits("team", team=world.team, max_concurrent_runs=2)
    runs = [
        run_services.start_run(project=world.project, user=u, task="echo", overrides={})
        for u in (world.member, world.admin, world.member, world.owner)
    ]
    assert run_services.claim_run(run_id=runs[0].pk, lease_owner="w") is not None
    assert run_services.claim_run(run_id=runs[1].pk, lease_owner="w") is not None
    # The 4th is delivered before the 3rd: neither starts, and the order is kept.
    assert run_services.claim_run(run_id=runs[3].pk, lease_owner="w") is None
    assert run_services.claim_run(run_id=runs[2].pk, lease_owner="w") is None
    third = Run.objects.get(pk=runs[2].pk)
    assert third.status == S.QUEUED and third.status_message == "team limit 2/2 running"
    assert Run.objects.get(pk=runs[3].pk).status_message == "team limit 2/2 running · 1 ahead"
    assert third.events.filter(type="status", data__message="team limit 2/2 running").exists()
    # A slot frees: the oldest waiting run is enqueued, and only it may take the slot.
    no_broker.clear()
    with django_capture_on_commit_callbacks(execute=True):
        run_services.transition(runs[0], to=S.SUCCEEDED, reason="completed")
    assert no_broker[0] == runs[2].pk
    assert run_services.claim_run(run_id=runs[3].pk, lease_owner="w") is None
    assert run_services.claim_run(run_id=runs[2].pk, lease_owner="w") is not None


def test_a_user_blocked_by_their_own_limit_does_not_hold_the_team_back(world, no_broker):
    limits("team", team=world.team, max_concurrent_runs=3)
    limits("user", user=world.member, max_concurrent_runs=1)
    a = run_services.start_run(project=world.project, user=world.member, task="1", overrides={})
    b = run_services.start_run(project=world.project, user=world.member, task="2", overrides={})
    c = run_services.start_run(project=world.project, user=world.admin, task="3", overrides={})
    assert run_services.claim_run(run_id=a.pk, lease_owner="w")
    assert run_services.claim_run(run_id=b.pk, lease_owner="w") is None
    assert Run.objects.get(pk=b.pk).status_message == "user limit 1/1 running"
    assert run_services.claim_run(run_id=c.pk, lease_owner="w") is not None


@pytest.mark.django_db(transaction=True)
def test_racing_claims_for_the_last_slots_start_exactly_the_limit(monkeypatch):
    monkeypatch.setattr(run_services, "enqueue_run", lambda run_id: None)
    owner = make_user("racer")
    team = Team.objects.create(name="Race")
    Membership.objects.create(team=team, user=owner, role="owner")
    project = make_project(owner, team=team)
    limit_services.save_policy(
        actor=None, scope="team", team=team, values={"max_concurrent_runs": 3}
    )
    runs = [
        run_services.start_run(project=project, user=owner, task=f"echo {i}", overrides={})
        for i in range(10)
    ]
    # Claims in reverse order too: FIFO means the three oldest must be the ones admitted.
    barrier = threading.Barrier(len(runs))
    results: dict[int, bool] = {}

    def claim(run_id: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[run_id] = (
                run_services.claim_run(run_id=run_id, lease_owner=f"t{run_id}") is not None
            )
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=claim, args=(r.pk,)) for r in reversed(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    started = Run.objects.filter(status=S.PROVISIONING).count()
    assert started == 3, (connection.vendor, results)
    assert sum(results.values()) == 3
    # Whatever the arrival order, nothing newer overtook an older run that could start.
    waiting = Run.objects.filter(status=S.QUEUED).order_by("created_at", "pk")
    assert all("team limit" in r.status_message for r in waiting), [
        r.status_message for r in waiting
    ]
    assert {r.pk for r in Run.objects.filter(status=S.PROVISIONING)} == {r.pk for r in runs[:3]}
    assert LimitPolicy.objects.count() == 1


def test_the_worker_rechecks_today_s_limits_when_it_claims(world, no_broker):
    world.project.memory_mb = 1024
    world.project.save()
    run = run_services.start_run(
        project=world.project, user=world.member, task="echo", overrides={}
    )
    assert run.config["memory_mb"] == 1024
    limits("team", team=world.team, max_memory_mb=256)
    claimed = run_services.claim_run(run_id=run.pk, lease_owner="w")
    assert claimed.config["memory_mb"] == 256
    assert any("clamped to 256 (team Alpha limit)" in n for n in claimed.config["clamp_notes"])
    # A limit that cannot be clamped (the image is no longer allowed) ends the run instead.
    late = run_services.start_run(project=world.project, user=world.member, task="x", overrides={})
    limits("team", team=world.team, max_memory_mb=256, allowed_images=["python:*"])
    assert run_services.claim_run(run_id=late.pk, lease_owner="w") is None
    late.refresh_from_db()
    assert (late.status, late.end_reason) == (S.ERROR, "limit")
    assert "is not allowed by the team Alpha limit" in late.error_message


def test_raising_a_limit_wakes_the_waiting_runs(
    world, no_broker, django_capture_on_commit_callbacks
):
    limits("team", team=world.team, max_concurrent_runs=1)
    first = run_services.start_run(project=world.project, user=world.member, task="1", overrides={})
    waiting = run_services.start_run(
        project=world.project, user=world.member, task="2", overrides={}
    )
    assert run_services.claim_run(run_id=first.pk, lease_owner="w")
    assert run_services.claim_run(run_id=waiting.pk, lease_owner="w") is None
    no_broker.clear()
    with django_capture_on_commit_callbacks(execute=True):
        limits("team", team=world.team, max_concurrent_runs=2)
    assert no_broker == [waiting.pk]
    assert run_services.claim_run(run_id=waiting.pk, lease_owner="w") is not None


@pytest.mark.django_db(transaction=True)
def test_admission_holds_the_team_lock_until_the_claim_commits(monkeypatch):
    """Counting running runs and deciding is one critical section per team: a second admission
    for the same team waits for the first one's commit (SELECT ... FOR UPDATE on PostgreSQL; the
    write lock of an IMMEDIATE transaction on SQLite)."""
    monkeypatch.setattr(run_services, "enqueue_run", lambda run_id: None)
    alice, bob = make_user("lock-a"), make_user("lock-b")
    team = Team.objects.create(name="Locks")
    for user in (alice, bob):
        Membership.objects.create(team=team, user=user, role="member")
    project = make_project(alice, team=team)
    limit_services.save_policy(
        actor=None, scope="team", team=team, values={"max_concurrent_runs": 1}
    )
    a = run_services.start_run(project=project, user=alice, task="a", overrides={})
    b = run_services.start_run(project=project, user=bob, task="b", overrides={})
    entered, release = threading.Event(), threading.Event()
    order: list = []

    def first() -> None:
        try:
            with transaction.atomic():
                run = Run.objects.select_related("project").get(pk=a.pk)
                order.append(("first", limit_services.admit(run=run).start))
                entered.set()
                release.wait(10)
                Run.objects.filter(pk=a.pk).update(status=S.PROVISIONING)
                order.append("first committed")
        finally:
            connection.close()

    def second() -> None:
        try:
            entered.wait(10)
            with transaction.atomic():
                run = Run.objects.select_related("project").get(pk=b.pk)
                order.append(("second", limit_services.admit(run=run).start))
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    entered.wait(10)
    time.sleep(0.8)
    assert order == [("first", True)], "the second admission did not wait for the lock"
    release.set()
    for thread in threads:
        thread.join(timeout=30)
    assert order == [("first", True), "first committed", ("second", False)]


def test_running_runs_reserve_their_budget_so_concurrent_runs_cannot_overshoot(
    world, no_broker, django_capture_on_commit_callbacks
):
    limits("team", team=world.team, monthly_token_budget=1000)
    a = run_services.start_run(project=world.project, user=world.member, task="a", overrides={})
    b = run_services.start_run(project=world.project, user=world.admin, task="b", overrides={})
    a = run_services.claim_run(run_id=a.pk, lease_owner="w")
    assert a.config["max_tokens_total"] == 1000
    # All 1000 are promised to a: b waits (it does not fail) ...
    assert run_services.claim_run(run_id=b.pk, lease_owner="w") is None
    b.refresh_from_db()
    assert b.status == S.QUEUED
    assert (
        b.status_message
        == "The team's monthly token budget: the 1000 tokens left are reserved by running runs"
    )
    # ... and gets what a did not use once a ends.
    Run.objects.filter(pk=a.pk).update(total_tokens=300)
    with django_capture_on_commit_callbacks(execute=True):
        run_services.transition(a, to=S.SUCCEEDED, reason="completed")
    assert no_broker[-1] == b.pk
    b = run_services.claim_run(run_id=b.pk, lease_owner="w")
    assert b.config["max_tokens_total"] == 700
