"""/api/v1/runs: launch, list (history filters, cursor pages), read, cancel, re-run, the event
log, the log as text, artifacts."""

from __future__ import annotations

import datetime as dt
import io
import mimetypes
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone
from ninja import Query, Router, Status

from apps.limits.selectors import effective_limits, month_start
from apps.limits.services import budget_state
from apps.projects import limits
from apps.projects.selectors import get_project_for_user
from apps.reviews.selectors import compare_runs
from apps.runs import ansi, selectors, services
from apps.runs.config import OVERRIDABLE
from apps.runs.forms import HistoryFilterForm
from apps.runs.models import Run
from apps.teams.selectors import require_project_role

from ..auth import token_auth
from ..exceptions import RateLimited
from ..schemas import (
    MAX_INT,
    ArtifactListOut,
    CompareOut,
    EventPageOut,
    Id,
    RunFilters,
    RunIn,
    RunOut,
    RunPageOut,
)
from .common import ERRORS, errors

router = Router(tags=["runs"])
READ = token_auth("runs:read")
WRITE = token_auth("runs:write")
MAX_EVENTS_PER_PAGE = 1000
# Artifact types a browser could execute are served as octet-stream (like the UI).
INERT_TYPES = ("text/plain", "image/png", "image/jpeg", "application/json")


def run_out(run: Run) -> dict:
    base = f"/api/v1/runs/{run.pk}"
    return {
        "id": run.pk,
        "project": run.project_id,
        "project_name": run.project.name,
        "launched_by": run.user.get_username() if run.user else None,
        "kind": run.kind,
        "task": run.task,
        "commands": run.commands,
        "overrides": run.overrides,
        "config": run.config,
        "status": run.status,
        "finished": run.is_terminal,
        "status_message": run.status_message,
        "end_reason": run.end_reason,
        "error_message": run.error_message,
        "queue_position": (
            selectors.queue_position(run=run) if run.status == Run.Status.QUEUED else None
        ),
        "rerun_of": run.rerun_of_id,
        "attempt": run.attempt,
        "last_seq": run.last_seq,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "usage": {
            "turns": run.turns,
            "input_tokens": run.input_tokens,
            "output_tokens": run.output_tokens,
            "cache_read_tokens": run.cache_read_tokens,
            "cache_write_tokens": run.cache_write_tokens,
            "total_tokens": run.total_tokens,
            "cost_usd": run.cost_usd,
        },
        "stats": {
            "duration_ms": run.duration_ms,
            "peak_memory_mb": run.peak_memory_mb,
            "log_lines": run.log_lines,
            "log_bytes": run.log_bytes,
            "log_dropped_bytes": run.log_dropped_bytes,
            "exit_code": run.exit_code,
        },
        "links": {
            "self": base,
            "events": f"{base}/events",
            "log": f"{base}/log",
            "artifacts": f"{base}/artifacts",
            "web": reverse("runs:detail", kwargs={"run_id": run.pk}),
        },
    }


def _fetch(request: HttpRequest, run_id: int) -> Run:
    return selectors.get_run_for_user(user=request.user, run_id=run_id)


def _check_limits(overrides: dict) -> None:
    """The launch form's rule: a value past the admin's limit is refused, not silently cut."""
    for name in limits.LIMIT_FIELDS:
        value = overrides.get(name)
        if value is not None and not limits.minimum(name) <= value <= limits.maximum(name):
            raise ValidationError(
                {
                    f"overrides.{name}": [
                        f"Must be between {limits.minimum(name):g} and "
                        f"{limits.maximum(name):g} (the admin's limit)."
                    ]
                }
            )


@router.post(
    "/runs",
    auth=WRITE,
    response={201: RunOut, **ERRORS},
    summary="Launch a run",
)
def launch_run(request: HttpRequest, payload: RunIn) -> Status:
    project = get_project_for_user(user=request.user, project_id=payload.project)
    require_project_role(user=request.user, project=project, min_role="member")
    overrides = payload.overrides.model_dump(exclude_none=True)
    _check_limits(overrides)
    task = "\n".join(payload.commands) if payload.commands else payload.task
    kind = payload.kind
    if payload.commands and kind is None:
        kind = Run.Kind.SCRIPT
    _check_budget(request.user, project)
    try:
        run = services.start_run(
            project=project, user=request.user, task=task, overrides=overrides, kind=kind
        )
    except ValidationError as exc:
        raise _as_override_errors(exc) from None
    return Status(201, run_out(run))


def _as_override_errors(exc: ValidationError) -> ValidationError:
    """The services name a run setting (``memory_mb``); in the API it sits in ``overrides``."""
    if not hasattr(exc, "error_dict"):
        return exc
    return ValidationError(
        {
            (f"overrides.{field}" if field in OVERRIDABLE else field): messages
            for field, messages in exc.message_dict.items()
        }
    )


def _check_budget(user, project) -> None:
    """A spent monthly budget is a limit, not bad input: 429 naming it, retry next month."""
    limits_now = effective_limits(user_id=user.pk, team_id=project.team_id)
    budget = budget_state(limits=limits_now, user_id=user.pk, team_id=project.team_id)
    if budget.exhausted:
        start = month_start()
        next_month = (start + dt.timedelta(days=32)).replace(day=1)
        wait = max(1, int((next_month - timezone.now()).total_seconds()))
        raise RateLimited(
            budget.exhausted, retry_after=wait, limit="monthly_budget", code="budget_exhausted"
        )


def _valid_cursor(cursor: str, sort: str) -> bool:
    decoded = selectors.decode_cursor(cursor, sort)
    if decoded is None:
        return False
    value, pk = decoded
    if not 0 <= pk <= MAX_INT:
        return False
    if isinstance(value, int) and not -MAX_INT <= value <= MAX_INT:
        return False
    if isinstance(value, Decimal) and not value.is_finite():
        return False
    return not isinstance(value, dt.datetime) or value.tzinfo is not None


def _review_filters(filters: RunFilters) -> dict[str, str]:
    """The review part of the history page's filters, built by the page's own form
    (``HistoryFilterForm.filters``) for ``apps.reviews.selectors.filter_by_review``."""
    data = {
        "verdict": filters.verdict or "",
        "label": filters.label or "",
        "reviewer": filters.reviewer or "",
        "has_comments": "" if filters.has_comments is None else str(int(filters.has_comments)),
    }
    form = HistoryFilterForm(data, projects=[])
    if not form.is_valid():
        # The form would drop every filter; the schema has the same rules, so this is a 400.
        raise ValidationError({f: list(e) for f, e in form.errors.items()})
    return form.filters().review


@router.get(
    "/runs",
    auth=READ,
    response={200: RunPageOut, **errors(400, 401, 403, 429)},
    summary="List runs (the history page's filters), newest first, by cursor",
)
def list_runs(request: HttpRequest, filters: Query[RunFilters]) -> dict:
    for name in ("cursor", "before"):
        value = getattr(filters, name)
        if value and not _valid_cursor(value, filters.sort):
            raise ValidationError({name: ["Not a cursor from this listing (or another sort)."]})
    history = selectors.HistoryFilters(
        project=filters.project,
        status=list(filters.status),
        user=(filters.user or "").strip(),
        date_from=filters.date_from,
        date_to=filters.date_to,
        min_duration=filters.min_duration,
        max_duration=filters.max_duration,
        min_cost=filters.min_cost,
        max_cost=filters.max_cost,
        sort=filters.sort,
        descending=filters.order == "desc",
        review=_review_filters(filters),
    )
    page = selectors.list_runs_for_user(
        user=request.user,
        filters=history,
        after=filters.cursor,
        before=filters.before,
        limit=filters.limit,
    )
    # The history page defers the columns its table does not show; the API returns whole runs,
    # so the page is read again in one query rather than once per deferred column and row.
    full = Run.objects.select_related("project", "user").in_bulk([run.pk for run in page.runs])
    return {
        "items": [run_out(full[run.pk]) for run in page.runs if run.pk in full],
        "next_cursor": page.next_cursor,
        "prev_cursor": page.prev_cursor,
    }


@router.get("/runs/{run_id}", auth=READ, response={200: RunOut, **ERRORS}, summary="Read a run")
def get_run(request: HttpRequest, run_id: Id) -> dict:
    return run_out(_fetch(request, run_id))


@router.get(
    "/runs/{run_id}/compare/{other_id}",
    auth=READ,
    response={200: CompareOut, **ERRORS},
    summary="Compare two runs (A = run_id, B = other_id): what the compare page shows",
)
def compare(request: HttpRequest, run_id: Id, other_id: Id) -> dict:
    a, b = _fetch(request, run_id), _fetch(request, other_id)
    result = compare_runs(a=a, b=b)
    return {
        "a": a.pk,
        "b": b.pk,
        "rows": [
            {"label": row.label, "a": row.a, "b": row.b, "differs": row.differs}
            for row in result["rows"]
        ],
        "files": result["files"],
    }


@router.post(
    "/runs/{run_id}/cancel",
    auth=WRITE,
    response={200: RunOut, **ERRORS},
    summary="Cancel a run (409 when it already finished)",
)
def cancel_run(request: HttpRequest, run_id: Id) -> dict:
    run = _fetch(request, run_id)
    require_project_role(user=request.user, project=run.project, min_role="member")
    return run_out(services.cancel_run(run=run, user=request.user))


@router.post(
    "/runs/{run_id}/rerun",
    auth=WRITE,
    response={201: RunOut, **ERRORS},
    summary="Launch the same run again",
)
def rerun(request: HttpRequest, run_id: Id) -> Status:
    run = _fetch(request, run_id)
    require_project_role(user=request.user, project=run.project, min_role="member")
    return Status(201, run_out(services.rerun(run=run, user=request.user)))


@router.get(
    "/runs/{run_id}/events",
    auth=READ,
    response={200: EventPageOut, **ERRORS},
    summary="The run's durable event log after a seq (what the WebSocket replays)",
)
def run_events(
    request: HttpRequest,
    run_id: Id,
    after: Query[int] = 0,
    limit: Query[int] = 500,
) -> dict:
    run = _fetch(request, run_id)
    after = max(0, min(after, MAX_INT))
    limit = max(1, min(limit, MAX_EVENTS_PER_PAGE))
    # State first, events second: "finished" may only be said once nothing can follow.
    status, last_seq = run.status, run.last_seq
    events = selectors.events_after(run_id=run.pk, after=after, limit=limit)
    next_after = events[-1]["seq"] if events else after
    return {
        "events": events,
        "next_after": next_after,
        "last_seq": max(last_seq, next_after),
        "status": status,
        "finished": status in Run.TERMINAL and next_after >= last_seq,
    }


def _inert(response: HttpResponse) -> HttpResponse:
    # Output of the agent: never rendered or sniffed by a browser.
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "sandbox"
    return response


@router.get(
    "/runs/{run_id}/log",
    auth=READ,
    response=ERRORS,
    openapi_extra={
        "responses": {
            200: {
                "description": "The log",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        }
    },
    summary="The run's whole log as text (plain=true strips colour codes)",
)
def run_log(request: HttpRequest, run_id: Id, plain: bool = False) -> HttpResponse:
    run = _fetch(request, run_id)
    chunks = selectors.iter_raw_log(run=run)
    if plain:
        chunks = (ansi.plain(chunk) for chunk in chunks)
    response = StreamingHttpResponse(
        (chunk.encode("utf-8") for chunk in chunks), content_type="text/plain; charset=utf-8"
    )
    return _inert(response)


def artifact_out(run_id: int, artifact) -> dict:
    return {
        "id": artifact.pk,
        "path": artifact.path,
        "name": artifact.name,
        "size": artifact.size,
        "sha256": artifact.sha256,
        "created_at": artifact.created_at,
        "download_url": f"/api/v1/runs/{run_id}/artifacts/{artifact.pk}/download",
    }


@router.get(
    "/runs/{run_id}/artifacts",
    auth=READ,
    response={200: ArtifactListOut, **ERRORS},
    summary="Files captured at the end of the run",
)
def list_artifacts(request: HttpRequest, run_id: Id) -> dict:
    run = _fetch(request, run_id)
    return {"items": [artifact_out(run.pk, a) for a in selectors.artifacts_of(run=run)]}


@router.get(
    "/runs/{run_id}/artifacts/{artifact_id}/download",
    auth=READ,
    response=ERRORS,
    openapi_extra={
        "responses": {
            200: {
                "description": "The file (served as an attachment)",
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        }
    },
    summary="Download one artifact (always as an attachment)",
)
def download_artifact(request: HttpRequest, run_id: Id, artifact_id: Id) -> HttpResponse:
    artifact = selectors.get_artifact_for_user(
        user=request.user, run_id=run_id, artifact_id=artifact_id
    )
    guessed, _ = mimetypes.guess_type(artifact.name)
    content_type = (
        guessed if guessed and guessed.startswith(INERT_TYPES) else "application/octet-stream"
    )
    response = FileResponse(
        io.BytesIO(bytes(artifact.content)),
        as_attachment=True,
        filename=artifact.name,
        content_type=content_type,
    )
    return _inert(response)
