import datetime as dt
from unittest import mock

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from apps.projects import services as project_services
from apps.runs import services
from apps.runs.exceptions import InvalidTransition, LeaseLost, RunError
from apps.runs.models import Run, RunEvent
from tests.projects.factories import make_project

S = Run.Status


@pytest.fixture
def enqueued():
    with mock.patch("apps.runs.tasks.execute_run_task.apply_async", autospec=True) as apply:
        yield apply


def statuses(run):
    return list(
        RunEvent.objects.filter(run=run, type="status")
        .order_by("seq")
        .values_list("data__status", flat=True)
    )


def launch(project, user, task="echo hi", **overrides):
    return services.start_run(project=project, user=user, task=task, overrides=overrides)


def test_start_run_stores_a_queued_run_and_enqueues_only_after_commit(
    project, alice, enqueued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        run = launch(project, alice, "echo one\n\n  echo two  ")
        assert not enqueued.called  # nothing leaves before the row is committed
    assert len(callbacks) == 2  # notify watchers, enqueue
    enqueued.assert_called_once_with(args=[run.pk], time_limit=120 + 600)
    run.refresh_from_db()
    assert run.status == S.QUEUED and run.kind == "script"
    assert run.commands == ["echo one", "echo two"]
    assert run.enqueued_at is not None
    assert run.last_seq == 1 and statuses(run) == ["queued"]
    assert run.config["memory_mb"] == 256 and run.config["image"]


def test_task_arguments_never_carry_secrets(alice, enqueued, django_capture_on_commit_callbacks):
    project = make_project(alice, env={"T": "${secret:T}"}, secrets={"T": "hunter2-secret"})
    with django_capture_on_commit_callbacks(execute=True):
        run = launch(project, alice)
    assert enqueued.call_args.kwargs["args"] == [run.pk]
    assert "hunter2-secret" not in str(run.config) + str(run.overrides)
    assert run.config["env"] == {"T": "${secret:T}"}


def test_overrides_are_validated_and_clamped_to_the_admin_limits(project, alice, settings):
    settings.RUN_LIMITS = {**settings.RUN_LIMITS, "memory_mb": 512, "timeout_seconds": 60}
    run = launch(project, alice, memory_mb=4096, timeout_seconds=30, image="python:3.12-slim")
    assert run.config["memory_mb"] == 512
    assert run.config["timeout_seconds"] == 30
    assert run.config["image"] == "python:3.12-slim"
    assert any("memory mb 4096 clamped to 512" in note for note in run.config["clamp_notes"])
    with pytest.raises(ValidationError):
        launch(project, alice, image="NOT valid!")
    with pytest.raises(ValidationError):
        launch(project, alice, flavour="x")


def test_agent_runs_need_a_task_and_script_runs_need_commands(alice):
    agent = make_project(alice, default_kind="agent", system_prompt="Be nice.")
    with pytest.raises(ValidationError) as info:
        launch(agent, alice, "   ")
    assert "task" in info.value.message_dict
    script = make_project(alice, default_commands="")
    with pytest.raises(ValidationError):
        launch(script, alice, "")


def test_archived_projects_cannot_launch(project, alice):
    project_services.archive_project(project=project)
    with pytest.raises(RunError, match="archived"):
        launch(project, alice)


def test_transition_validates_records_an_event_and_finishes(project, alice):
    run = launch(project, alice)
    with pytest.raises(InvalidTransition):
        services.transition(run, to=S.RUNNING)  # queued -> running skips provisioning
    run = services.transition(run, to=S.PROVISIONING, message="Starting a sandbox")
    run = services.transition(run, to=S.RUNNING)
    assert run.started_at is not None and run.status_message == ""
    run = services.transition(run, to=S.FAILED, reason="exit_code", message="command 1 failed")
    assert run.finished_at is not None and run.duration_ms >= 0
    assert (run.end_reason, run.error_message) == ("exit_code", "command 1 failed")
    assert statuses(run) == ["queued", "provisioning", "running", "failed"]
    assert run.last_seq == 4
    with pytest.raises(InvalidTransition):
        services.transition(run, to=S.SUCCEEDED)  # terminal states are final


def test_claim_is_a_compare_and_set_with_attempts_and_a_lease(project, alice, settings):
    run = launch(project, alice)
    claimed = services.claim_run(run_id=run.pk, lease_owner="w1")
    assert claimed.status == S.PROVISIONING and claimed.attempt == 1
    assert claimed.lease_owner == "w1" and claimed.lease_expires_at > timezone.now()
    # A duplicate delivery finds it taken while the lease is alive.
    assert services.claim_run(run_id=run.pk, lease_owner="w2") is None
    # The first worker died: its lease ran out, a redelivery takes over as attempt 2.
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - dt.timedelta(seconds=1))
    again = services.claim_run(run_id=run.pk, lease_owner="w2")
    assert again.attempt == 2 and again.lease_owner == "w2"
    # The old worker can no longer write.
    with pytest.raises(LeaseLost):
        services.transition(again, to=S.RUNNING, lease_owner="w1")
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - dt.timedelta(seconds=1))
    settings.RUN_MAX_ATTEMPTS = 2
    assert services.claim_run(run_id=run.pk, lease_owner="w3") is None
    run.refresh_from_db()
    assert run.status == S.CRASHED and "2 time(s)" in run.error_message
    assert services.claim_run(run_id=123456, lease_owner="w3") is None


def test_renew_lease_reports_the_state_or_a_lost_lease(project, alice):
    run = launch(project, alice)
    services.claim_run(run_id=run.pk, lease_owner="w1")
    assert services.renew_lease(run_id=run.pk, lease_owner="w1") == S.PROVISIONING
    assert services.renew_lease(run_id=run.pk, lease_owner="someone-else") is None


def test_cancel_queued_is_immediate_and_running_goes_through_cancelling(project, alice):
    queued = launch(project, alice)
    queued = services.cancel_run(run=queued, user=alice)
    assert queued.status == S.CANCELLED and queued.end_reason == "cancelled"
    assert "alice" in queued.error_message

    running = launch(project, alice)
    services.claim_run(run_id=running.pk, lease_owner="w1")
    running = services.transition(running, to=S.RUNNING, lease_owner="w1")
    running = services.cancel_run(run=running, user=alice)
    assert running.status == S.CANCELLING
    assert services.cancel_run(run=running, user=alice).status == S.CANCELLING  # idempotent
    finished = services.transition(running, to=S.CANCELLED, reason="cancelled")
    assert services.cancel_run(run=finished, user=alice).status == S.CANCELLED
    done = launch(project, alice)
    done = services.transition(done, to=S.ERROR, reason="config_error")
    with pytest.raises(RunError, match="already finished"):
        services.cancel_run(run=done, user=alice)


def test_stale_leases_end_runs_as_crashed_or_cancelled(project, alice):
    past = timezone.now() - dt.timedelta(minutes=5)
    crashed, cancelling, healthy = (
        launch(project, alice),
        launch(project, alice),
        launch(project, alice),
    )
    for run in (crashed, cancelling, healthy):
        services.claim_run(run_id=run.pk, lease_owner=f"w{run.pk}")
    services.transition(crashed, to=S.RUNNING)
    services.transition(cancelling, to=S.CANCELLING)
    Run.objects.filter(pk__in=[crashed.pk, cancelling.pk]).update(lease_expires_at=past)
    assert sorted(services.expire_stale_runs()) == sorted([crashed.pk, cancelling.pk])
    assert Run.objects.get(pk=crashed.pk).status == S.CRASHED
    assert Run.objects.get(pk=cancelling.pk).status == S.CANCELLED
    assert Run.objects.get(pk=healthy.pk).status == S.PROVISIONING


def test_lost_queue_messages_are_sent_again(project, alice, enqueued, settings):
    old, fresh = launch(project, alice), launch(project, alice)
    Run.objects.filter(pk=old.pk).update(enqueued_at=timezone.now() - dt.timedelta(hours=1))
    Run.objects.filter(pk=fresh.pk).update(enqueued_at=timezone.now())
    assert services.requeue_lost_runs() == [old.pk]
    assert enqueued.call_args.kwargs["args"] == [old.pk]


def test_rerun_copies_task_and_overrides(project, alice):
    first = launch(project, alice, "make test", memory_mb=128)
    second = services.rerun(run=first, user=alice)
    assert (second.task, second.overrides, second.rerun_of_id) == (
        "make test",
        {"memory_mb": 128},
        first.pk,
    )
