"""Writes to runs: launch, cancel, re-run, and the one function that moves a run's state.

Every state change goes through :func:`transition`: it validates the move against
:data:`TRANSITIONS`, updates the row with a conditional UPDATE (so two writers cannot both win),
and appends a ``status`` event to the run's log (through recorder.append_events, which notifies
watchers after the commit).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.projects import validation
from apps.projects.models import Project

from .config import effective_config
from .exceptions import InvalidTransition, LeaseLost, RunError
from .models import Run
from .recorder import NewEvent, append_events

log = logging.getLogger(__name__)
S = Run.Status

TRANSITIONS: dict[str, frozenset[str]] = {
    # QUEUED -> FAILED: refused at admission (its monthly budget was spent while it waited).
    S.QUEUED: frozenset({S.PROVISIONING, S.CANCELLED, S.ERROR, S.CRASHED, S.FAILED}),
    # PROVISIONING -> PROVISIONING and RUNNING -> PROVISIONING: a new attempt after the worker
    # holding the run died (its lease expired).
    S.PROVISIONING: frozenset({S.PROVISIONING, S.RUNNING, S.CANCELLING} | Run.TERMINAL),
    S.RUNNING: frozenset({S.PROVISIONING, S.CANCELLING} | Run.TERMINAL),
    S.CANCELLING: Run.TERMINAL,
}
MAX_TASK_CHARS = 100_000
MAX_COMMANDS = 200


def transition(
    run: Run,
    *,
    to: str,
    reason: str = "",
    message: str = "",
    lease_owner: str | None = None,
    allow: Callable[[Run], bool] | None = None,
    fields: Mapping[str, Any] | None = None,
) -> Run:
    """Move ``run`` to state ``to``; returns the run as stored afterwards.

    ``lease_owner``: only if that worker still holds the run (else LeaseLost). ``allow``: an extra
    condition on the current row (the claim uses it). Raises InvalidTransition when the move is
    not allowed from the current state. Terminal states release the lease and record
    ``end_reason`` (``reason``) and ``error_message`` (``message``).
    """
    with transaction.atomic():
        current = Run.objects.select_for_update().get(pk=run.pk)
        if to not in TRANSITIONS.get(current.status, frozenset()) or (
            allow is not None and not allow(current)
        ):
            raise InvalidTransition(f"run {run.pk} cannot go from {current.status} to {to}")
        if lease_owner is not None and current.lease_owner != lease_owner:
            raise LeaseLost(f"run {run.pk} is no longer held by {lease_owner}")
        now = timezone.now()
        updates: dict[str, Any] = {"status": to, **(fields or {})}
        if to == S.RUNNING and current.started_at is None:
            updates["started_at"] = now
        if to in Run.TERMINAL:
            started = updates.get("started_at") or current.started_at
            updates.update(
                finished_at=now,
                end_reason=reason or to,
                error_message=message,
                status_message="",
                lease_owner="",
                lease_expires_at=None,
                duration_ms=int((now - started).total_seconds() * 1000) if started else 0,
            )
        else:
            updates["status_message"] = message[:300]
        # Conditional on the state read above: a racing writer makes this a no-op, not a clobber.
        if not Run.objects.filter(pk=run.pk, status=current.status).update(**updates):
            raise InvalidTransition(f"run {run.pk} changed state while moving to {to}")
        if to in Run.TERMINAL:
            # A slot of its team/user frees (or a run others waited behind is gone): start the
            # next waiting runs (apps/limits).
            _release_after_commit(current)
        append_events(
            run.pk,
            [
                NewEvent(
                    type="status",
                    ts=time.time(),
                    data={
                        "status": to,
                        "previous": current.status,
                        "reason": reason,
                        "message": message,
                        "attempt": updates.get("attempt", current.attempt),
                    },
                )
            ],
        )
    run.refresh_from_db()
    return run


def _release_after_commit(run: Run) -> None:
    from apps.limits.services import release_slot

    user_id = run.user_id
    team_id = Project.objects.filter(pk=run.project_id).values_list("team_id", flat=True).first()

    def release() -> None:
        try:
            release_slot(user_id=user_id, team_id=team_id)
        except Exception as exc:  # the sweeper re-enqueues waiting runs anyway
            log.warning("releasing a slot after run %s failed: %s", run.pk, exc)

    transaction.on_commit(release)


# -- launching ---------------------------------------------------------------------------------


def enqueue_run(run_id: int) -> None:
    from .tasks import execute_run_task

    run = Run.objects.only("config").get(pk=run_id)
    timeout = int(run.config.get("timeout_seconds") or 900)
    Run.objects.filter(pk=run_id).update(enqueued_at=timezone.now())
    # Celery's hard limit backs up the sandbox deadline; it kills the worker child only.
    execute_run_task.apply_async(args=[run_id], time_limit=timeout + 600)


@transaction.atomic
def start_run(
    *,
    project: Project,
    user: AbstractBaseUser,
    task: str,
    overrides: Mapping[str, Any],
    kind: str | None = None,
    rerun_of: Run | None = None,
) -> Run:
    """Create a queued run and enqueue ``execute_run`` once the row is committed.

    ``task`` is the prompt of an agent run, or the commands of a script run (one per line).
    Overrides are validated and the result clamped to the admin's limits (apps/limits: values
    asked for above the user's or team's limit are a ValidationError naming the limit; a spent
    monthly budget refuses the launch). Needs the member role or higher (PermissionDenied).
    The launch is audited in this transaction.
    """
    from apps.audit.services import Action, record
    from apps.limits.services import apply_launch_limits
    from apps.teams.selectors import require_project_role

    require_project_role(user=user, project=project, min_role="member")
    if project.is_archived:
        raise RunError(f"Project {project.name} is archived; restore it to launch runs.")
    kind = kind or project.default_kind
    if kind not in Run.Kind.values:
        raise ValidationError({"kind": ["Choose agent or script."]})
    task = (task or "").replace("\x00", "").strip()
    commands: list[str] = []
    if kind == Run.Kind.AGENT:
        if not task:
            raise ValidationError({"task": ["Tell the agent what to do."]})
        if len(task) > MAX_TASK_CHARS:
            raise ValidationError({"task": [f"At most {MAX_TASK_CHARS} characters."]})
    else:
        commands = validation.parse_lines(task or project.default_commands)
        if not commands:
            raise ValidationError({"task": ["Give at least one command (one per line)."]})
        if len(commands) > MAX_COMMANDS:
            raise ValidationError({"task": [f"At most {MAX_COMMANDS} commands."]})
        task = "\n".join(commands)
    config = effective_config(project=project, kind=kind, overrides=overrides)
    config = apply_launch_limits(user=user, project=project, config=config, requested=overrides)
    run = Run.objects.create(
        project=project,
        user=user,
        kind=kind,
        task=task,
        commands=commands,
        overrides=dict(overrides),
        config=config,
        rerun_of=rerun_of,
        status=S.QUEUED,
        status_message="Waiting for a free worker",
    )
    append_events(
        run.pk,
        [
            NewEvent(
                type="status",
                ts=time.time(),
                data={"status": S.QUEUED, "previous": "", "reason": "", "message": ""},
            )
        ],
    )
    record(
        actor=user,
        action=Action.RUN_LAUNCH,
        target=run,
        team_id=project.team_id,
        target_repr=f"run #{run.pk} of {project.name}",
        after={
            "project": project.pk,
            "kind": kind,
            "overrides": dict(overrides),
            **{
                k: config.get(k)
                for k in (
                    "image",
                    "cpu_cores",
                    "memory_mb",
                    "disk_mb",
                    "timeout_seconds",
                    "network_mode",
                    "provider",
                )
            },
        },
    )
    run_id = run.pk
    transaction.on_commit(lambda: enqueue_run(run_id))
    return run


def rerun(*, run: Run, user: AbstractBaseUser) -> Run:
    return start_run(
        project=run.project,
        user=user,
        task=run.task,
        overrides=run.overrides,
        kind=run.kind,
        rerun_of=run,
    )


def cancel_run(*, run: Run, user: AbstractBaseUser) -> Run:
    """Queued: cancelled at once. Provisioning/running: ``cancelling``; the worker's watcher sees
    it within a second and destroys the sandbox. Cancelling twice is harmless. Audited in the
    transaction of the state change."""
    from apps.audit.services import Action, record
    from apps.teams.selectors import require_project_role

    require_project_role(user=user, project=run.project, min_role="member")
    before = run.status
    with transaction.atomic():
        result = _cancel_run(run=run, user=user)
        if result.status != before:
            record(
                actor=user,
                action=Action.RUN_CANCEL,
                target=result,
                team_id=result.project.team_id,
                target_repr=f"run #{result.pk}",
                before={"status": before},
                after={"status": result.status},
            )
    return result


def _cancel_run(*, run: Run, user: AbstractBaseUser) -> Run:
    who = user.get_username()
    if run.status == S.QUEUED:
        try:
            return transition(
                run, to=S.CANCELLED, reason="cancelled", message=f"Cancelled by {who}"
            )
        except InvalidTransition:
            run.refresh_from_db()  # a worker claimed it meanwhile: cancel the live run instead
    if run.status in (S.PROVISIONING, S.RUNNING):
        try:
            return transition(run, to=S.CANCELLING, message=f"Cancel requested by {who}")
        except InvalidTransition:
            run.refresh_from_db()
    if run.status == S.CANCELLING or run.is_terminal:
        if run.is_terminal and run.status != S.CANCELLED:
            raise RunError(f"Run #{run.pk} already finished ({run.get_status_display()}).")
        return run
    raise RunError(f"Run #{run.pk} cannot be cancelled now ({run.status}).")


# -- the worker's side: claim and lease ---------------------------------------------------------


def claim_run(*, run_id: int, lease_owner: str) -> Run | None:
    """Claim a queued run (or one whose worker died) for this worker; None if not ours.

    A conditional UPDATE through :func:`transition`: only one claimer can move the row from the
    state it read, so a duplicate delivery returns None and starts nothing. Each claim counts an
    attempt; past ``RUN_MAX_ATTEMPTS`` the run is marked crashed instead of started again.
    """
    run = Run.objects.filter(pk=run_id).first()
    if run is None:
        return None
    now = timezone.now()
    lease = dt.timedelta(seconds=settings.RUN_LEASE_SECONDS)

    def claimable(current: Run) -> bool:
        if current.status == S.QUEUED:
            return True
        return current.lease_expires_at is not None and current.lease_expires_at < now

    if run.attempt >= settings.RUN_MAX_ATTEMPTS and run.status != S.QUEUED:
        if claimable(run):
            with contextlib.suppress(InvalidTransition):
                transition(
                    run,
                    to=S.CRASHED,
                    reason="crashed",
                    message=f"The worker running it stopped {run.attempt} time(s); giving up.",
                    allow=claimable,
                )
        return None
    fields: dict[str, Any] = {
        "attempt": run.attempt + 1,
        "lease_owner": lease_owner,
        "lease_expires_at": now + lease,
        "claimed_at": now,
        "sandbox_id": "",
    }
    try:
        with transaction.atomic():
            if run.status == S.QUEUED and not _admit(run, fields):
                return None
            timeout = int(fields.get("config", run.config).get("timeout_seconds") or 900)
            fields["deadline"] = now + dt.timedelta(seconds=timeout + 120)
            return transition(
                run,
                to=S.PROVISIONING,
                message="Starting a sandbox"
                if run.attempt == 0
                else "Starting again after a crash",
                allow=claimable,
                fields=fields,
            )
    except InvalidTransition:
        return None


def _admit(run: Run, fields: dict[str, Any]) -> bool:
    """The limits' say on a queued run (apps/limits/services.py: ``admit``), under their scope
    locks, in the claim's transaction. Waiting: the reason goes on the run (once per change).
    Refused: the run ends. Admitted: ``fields`` gets the re-checked config."""
    from apps.limits.services import admit

    run = Run.objects.select_related("project").get(pk=run.pk)
    admission = admit(run=run)
    if admission.start:
        fields["config"] = admission.config
        return True
    if admission.refuse:
        transition(
            run,
            to=S.FAILED if admission.refuse_reason == "budget" else S.ERROR,
            reason=admission.refuse_reason,
            message=admission.refuse,
        )
        return False
    if run.status_message != admission.reason and Run.objects.filter(
        pk=run.pk, status=S.QUEUED
    ).update(status_message=admission.reason[:300]):
        append_events(
            run.pk,
            [
                NewEvent(
                    type="status",
                    ts=time.time(),
                    data={
                        "status": S.QUEUED,
                        "previous": S.QUEUED,
                        "reason": "limit",
                        "message": admission.reason,
                    },
                )
            ],
        )
    return False


def renew_lease(*, run_id: int, lease_owner: str) -> str | None:
    """Extend this worker's lease; returns the run's state, or None when the lease is lost."""
    until = timezone.now() + dt.timedelta(seconds=settings.RUN_LEASE_SECONDS)
    if not Run.objects.filter(pk=run_id, lease_owner=lease_owner).update(lease_expires_at=until):
        return None
    return Run.objects.filter(pk=run_id).values_list("status", flat=True).first()


def expire_stale_runs(*, now: dt.datetime | None = None) -> list[int]:
    """Runs whose worker stopped renewing its lease: ``crashed`` (``cancelled`` when a cancel
    was pending). Returns their ids."""
    now = now or timezone.now()
    grace = dt.timedelta(seconds=5)
    stale = Run.objects.filter(
        status__in=[S.PROVISIONING, S.RUNNING, S.CANCELLING], lease_expires_at__lt=now - grace
    ).values_list("pk", flat=True)
    ended = []
    for run_id in list(stale):
        run = Run.objects.get(pk=run_id)
        to = S.CANCELLED if run.status == S.CANCELLING else S.CRASHED
        try:
            transition(
                run,
                to=to,
                reason="cancelled" if to == S.CANCELLED else "crashed",
                message="The worker running it stopped answering (its lease expired); "
                "the sandbox is removed by the sweeper.",
                allow=lambda current: bool(
                    current.lease_expires_at and current.lease_expires_at < now - grace
                ),
            )
            ended.append(run_id)
        except InvalidTransition:
            continue
    return ended


def requeue_lost_runs(*, now: dt.datetime | None = None) -> list[int]:
    """Queued runs whose message may have been lost (a Redis restart) are enqueued again.

    Safe because the claim is idempotent: a duplicate message finds the run taken and exits."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(seconds=settings.RUN_REQUEUE_AFTER_SECONDS)
    ids = list(
        Run.objects.filter(status=S.QUEUED)
        .filter(Q(enqueued_at__lt=cutoff) | Q(enqueued_at__isnull=True, created_at__lt=cutoff))
        .values_list("pk", flat=True)[:100]
    )
    for run_id in ids:
        enqueue_run(run_id)
    return ids
