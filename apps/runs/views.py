from __future__ import annotations

import io
import mimetypes
import zipfile
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.projects.selectors import get_project_for_user, projects_visible_to
from apps.teams.selectors import require_project_role

from . import selectors, services
from .exceptions import RunError
from .forms import HistoryFilterForm, LaunchForm
from .models import Run
from .templatetags import runs as run_tags

MAX_FETCH_LINES = 20_000
PREVIEW_BYTES = 256 * 1024


def _attachment_headers(response: HttpResponse) -> HttpResponse:
    # Files come from the agent: never let the browser render or sniff them here.
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "sandbox"
    return response


# -- launching ------------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def launch(request: HttpRequest, project_id: int) -> HttpResponse:
    project = get_project_for_user(user=request.user, project_id=project_id)
    require_project_role(user=request.user, project=project, min_role="member")  # else 403
    source = None
    if request.GET.get("from"):
        source = selectors.get_run_for_user(user=request.user, run_id=request.GET["from"])
    initial = LaunchForm.initial_from_run(source) if source else {}
    if not initial and project.default_commands:
        initial = {"task": project.default_commands if project.default_kind == "script" else ""}
    form = LaunchForm(request.POST or None, project=project, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            run = services.start_run(
                project=project,
                user=request.user,
                task=form.cleaned_data["task"],
                overrides=form.overrides(),
                kind=form.cleaned_data["kind"],
                rerun_of=source,
            )
        except ValidationError as exc:
            if hasattr(exc, "error_dict"):
                for field, errors in exc.message_dict.items():
                    form.add_error(field if field in form.fields else None, errors)
            else:
                form.add_error(None, exc)
        except RunError as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("runs:detail", run_id=run.pk)
    status = 400 if form.errors else 200
    return render(
        request,
        "runs/launch.html",
        {"form": form, "project": project, "source": source},
        status=status,
    )


@login_required
@require_POST
def cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    run = selectors.get_run_for_user(user=request.user, run_id=run_id)
    try:
        services.cancel_run(run=run, user=request.user)
    except RunError as exc:
        messages.error(request, str(exc))
    if request.htmx:
        run.refresh_from_db()
        return render(request, "runs/_header.html", _header_context(run))
    return redirect("runs:detail", run_id=run.pk)


@login_required
@require_POST
def rerun(request: HttpRequest, run_id: int) -> HttpResponse:
    run = selectors.get_run_for_user(user=request.user, run_id=run_id)
    try:
        new = services.rerun(run=run, user=request.user)
    except (RunError, ValidationError) as exc:
        messages.error(request, "; ".join(getattr(exc, "messages", [str(exc)])))
        return redirect("runs:detail", run_id=run.pk)
    return redirect("runs:detail", run_id=new.pk)


# -- the run page ---------------------------------------------------------------------------------


def _log_rows(lines: list[selectors.LogLine]) -> SafeString:
    """The markup of templates/runs/_log_line.html for every line, built in Python.

    Including the partial once per line cost ~0.6 ms of template engine per line (1,000 lines
    a page: 0.6-1 s of CPU per run page, several seconds once 30 runs share the CPU; see
    docs/benchmarks.md "Load"). This is the same markup (tests/load/test_run_page.py compares it
    with the partial), at a small fraction of the cost.
    """
    zone = timezone.get_current_timezone()
    rows = []
    for line in lines:
        number = line.number
        ts = line.ts.astimezone(zone)
        err = " err" if line.stream == "stderr" else ""
        rows.append(
            f'<div class="ln{err}" id="L{number}" data-n="{number}">'
            f'<a class="ln-no" href="#L{number}">{number}</a>'
            f'<time class="ln-ts" datetime="{escape(ts.isoformat())}">{ts:%H:%M:%S}</time>'
            f'<span class="ln-tx">{line.html}</span></div>\n'
        )
    return mark_safe("".join(rows))  # noqa: S308 - numbers, an escaped timestamp, ansi.to_html


def _header_context(run: Run) -> dict:
    limit_mb = int(run.config.get("log_limit_mb") or 16)
    context = {"run": run, "config": run.config, "log_limit_bytes": limit_mb * 1024 * 1024}
    if run.status == Run.Status.QUEUED:
        context["queue_position"] = selectors.queue_position(run=run)
    return context


@login_required
@require_GET
def detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = selectors.get_run_for_user(user=request.user, run_id=run_id)
    # Everything below is read at or before last_seq; the socket resumes after it.
    after = run.last_seq
    lines = selectors.log_tail(run=run)
    context = {
        **_header_context(run),
        "after": after,
        "lines": lines,
        "log_rows": _log_rows(lines),
        "first_line": lines[0].number if lines else run.log_lines + 1,
        "timeline": selectors.timeline_events(run=run),
        "log_anchors": selectors.log_anchors(run=run),
        "stats": selectors.stats_samples(run=run),
        **_files_context(run),
    }
    return render(request, "runs/detail.html", context)


@login_required
@require_GET
def header(request: HttpRequest, run_id: int) -> HttpResponse:
    run = selectors.get_run_for_user(user=request.user, run_id=run_id)
    return render(request, "runs/_header.html", _header_context(run))


def _files_context(run: Run) -> dict:
    listing = selectors.latest_file_listing(run=run)
    artifacts = list(selectors.artifacts_of(run=run))
    by_path = {a.path: a for a in artifacts}
    rows = []
    for path, size, is_dir in (listing or {}).get("entries", []):
        depth = path.count("/")
        rows.append(
            {
                "path": path,
                "name": path.rsplit("/", 1)[-1],
                "size": size,
                "is_dir": is_dir,
                "depth": min(depth, 10),
                "artifact": by_path.get(path),
            }
        )
    return {"listing": listing, "tree": rows, "artifacts": artifacts}


@login_required
@require_GET
def files(request: HttpRequest, run_id: int) -> HttpResponse:
    run = selectors.get_run_for_user(user=request.user, run_id=run_id)
    return render(request, "runs/_files.html", {"run": run, **_files_context(run)})


@login_required
@require_GET
def log_lines(request: HttpRequest, run_id: int) -> JsonResponse:
    """Lines as JSON for the log view: ``?before=N`` (the lines just before N), ``?after=N``,
    ``?from=N`` (a window starting at N) or ``?tail=1`` (the end); ``limit`` caps the count."""
    run = selectors.get_run_for_user(user=request.user, run_id=run_id)
    try:
        limit = min(MAX_FETCH_LINES, max(1, int(request.GET.get("limit", 2000))))
        if "before" in request.GET:
            last = int(request.GET["before"]) - 1
            first = last - limit + 1
        elif "after" in request.GET:
            first = int(request.GET["after"]) + 1
            last = first + limit - 1
        elif "from" in request.GET:
            first = max(1, int(request.GET["from"]))
            last = first + limit - 1
        else:
            last = run.log_lines
            first = last - limit + 1
    except ValueError:
        return JsonResponse({"error": "before/after/from/limit must be numbers"}, status=400)
    lines = selectors.log_lines(run=run, first=first, last=min(last, run.log_lines))
    return JsonResponse(
        {
            "lines": [[ln.number, ln.ts.timestamp(), ln.stream, ln.text] for ln in lines],
            "total": run.log_lines,
            "last_seq": run.last_seq,
        }
    )


@login_required
@require_GET
def log_search(request: HttpRequest, run_id: int) -> HttpResponse:
    run = selectors.get_run_for_user(user=request.user, run_id=run_id)
    query = request.GET.get("q", "").strip()[:200]
    result = selectors.search_log(run=run, query=query) if query else None
    return render(request, "runs/_search_results.html", {"run": run, "result": result})


@login_required
@require_GET
def log_raw(request: HttpRequest, run_id: int) -> StreamingHttpResponse:
    run = selectors.get_run_for_user(user=request.user, run_id=run_id)
    response = StreamingHttpResponse(
        (chunk.encode("utf-8") for chunk in selectors.iter_raw_log(run=run)),
        content_type="text/plain; charset=utf-8",
    )
    response["Content-Disposition"] = f'attachment; filename="run-{run.pk}.log"'
    return _attachment_headers(response)


# -- artifacts ------------------------------------------------------------------------------------


def _is_text(content: bytes) -> bool:
    sample = content[:8192]
    if b"\x00" in sample:
        return False
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start > len(sample) - 4  # cut in the middle of a character
    return True


@login_required
@require_GET
def artifact_view(request: HttpRequest, run_id: int, artifact_id: int) -> HttpResponse:
    artifact = selectors.get_artifact_for_user(
        user=request.user, run_id=run_id, artifact_id=artifact_id
    )
    content = bytes(artifact.content[:PREVIEW_BYTES])
    text = content.decode("utf-8", "replace") if _is_text(content) else None
    return render(
        request,
        "runs/_artifact_view.html",
        {
            "artifact": artifact,
            "run_id": run_id,
            "text": text,
            "cut": artifact.size > PREVIEW_BYTES,
        },
    )


@login_required
@require_GET
def artifact_download(request: HttpRequest, run_id: int, artifact_id: int) -> HttpResponse:
    artifact = selectors.get_artifact_for_user(
        user=request.user, run_id=run_id, artifact_id=artifact_id
    )
    guessed, _ = mimetypes.guess_type(artifact.name)
    # Only inert types keep their name; anything a browser might execute is octet-stream.
    content_type = (
        guessed
        if guessed
        and guessed.startswith(("text/plain", "image/png", "image/jpeg", "application/json"))
        else "application/octet-stream"
    )
    response = FileResponse(
        io.BytesIO(bytes(artifact.content)),
        as_attachment=True,
        filename=artifact.name,
        content_type=content_type,
    )
    return _attachment_headers(response)


def _zip_entry_name(path: str, artifact_id: int) -> str:
    """A name no unzip tool can take outside the folder it extracts to.

    Workspace names are any bytes but "/" and NUL: ``..\\..\\evil.bat`` is one harmless file on
    Linux and a path two folders up for Windows extractors, ``C:x`` a drive there. Backslashes
    and colons become "_"; empty, "." and ".." parts go.
    """
    parts = [
        part.replace("\\", "_").replace(":", "_")
        for part in path.split("/")
        if part not in ("", ".", "..")
    ]
    return "/".join(parts) if parts else f"artifact-{artifact_id}"


@login_required
@require_GET
def artifacts_zip(request: HttpRequest, run_id: int) -> HttpResponse:
    run = selectors.get_run_for_user(user=request.user, run_id=run_id)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for artifact in run.artifacts.order_by("path").iterator(chunk_size=20):
            archive.writestr(_zip_entry_name(artifact.path, artifact.pk), bytes(artifact.content))
    buffer.seek(0)
    response = FileResponse(
        buffer,
        as_attachment=True,
        filename=f"run-{run.pk}-artifacts.zip",
        content_type="application/zip",
    )
    return _attachment_headers(response)


# -- history --------------------------------------------------------------------------------------


def _history_rows(runs: list[Run]) -> list[dict]:
    """Table rows as plain values: the template does lookups, no per-cell filter chains."""
    detail = reverse("runs:detail", args=[0])[:-2]  # "/runs/"
    project = reverse("projects:detail", args=[0])[:-2]
    rows = []
    for run in runs:
        rows.append(
            {
                "run": run,
                "pk": run.pk,
                "url": f"{detail}{run.pk}/",
                "created": run.created_at,
                "project": run.project.name,
                "project_url": f"{project}{run.project_id}/",
                "status": run.get_status_display(),
                "tone": run_tags.status_tone(run.status),
                "end": run_tags.end_reason_label(run.end_reason) if run.is_terminal else "",
                "kind": run.kind,
                "task": run_tags.first_line(run.task, 70),
                "user": run.user.get_username() if run.user else "—",
                "duration": run_tags.duration(run.duration_ms) if run.duration_ms else "—",
                "tokens": run_tags.tokens(run.total_tokens) if run.total_tokens else "—",
                "cost": run_tags.usd(run.cost_usd) if run.cost_usd else "—",
                "peak": f"{run.peak_memory_mb:.0f} MB" if run.peak_memory_mb else "—",
            }
        )
    return rows


@login_required
@require_GET
def history(request: HttpRequest) -> HttpResponse:
    projects = projects_visible_to(request.user).order_by("name").only("pk", "name")
    form = HistoryFilterForm(request.GET or None, projects=projects)
    if request.GET and not form.is_valid():
        return HttpResponseBadRequest("Invalid filters")
    filters = form.filters() if request.GET else HistoryFilterForm(projects=[]).filters()
    page = selectors.list_runs_for_user(
        user=request.user,
        filters=filters,
        after=request.GET.get("after"),
        before=request.GET.get("before"),
    )
    base = request.GET.copy()
    base.pop("after", None)
    base.pop("before", None)
    query = base.urlencode()

    def link(**extra: str) -> str:
        params = base.copy()
        for key, value in extra.items():
            params[key] = value
        return f"{reverse('runs:history')}?{params.urlencode()}"

    def sort_link(key: str) -> str:
        params = base.copy()
        same = filters.sort == key
        params["sort"] = key
        params["order"] = "asc" if same and filters.descending else "desc"
        return f"{reverse('runs:history')}?{urlencode(params, doseq=True)}"

    context = {
        "form": form,
        "page": page,
        "rows": _history_rows(page.runs),
        "filters": filters,
        "query": query,
        "next_url": link(after=page.next_cursor) if page.next_cursor else None,
        "prev_url": link(before=page.prev_cursor) if page.prev_cursor else None,
        "sort_links": {key: sort_link(key) for key in ("created", "duration", "cost", "tokens")},
    }
    template = "runs/_history_table.html" if request.htmx else "runs/history.html"
    return render(request, template, context)
