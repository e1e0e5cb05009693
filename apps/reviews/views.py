"""Review views. The panel and its POST endpoints are htmx fragments on the run page (each POST
answers with the re-rendered panel); without htmx they redirect back to the run."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from apps.runs import selectors as run_selectors
from apps.runs.models import Run
from apps.teams.selectors import role_in_project

from . import selectors, services
from .models import ShareLink, Verdict


def _panel_context(request: HttpRequest, run: Run, **extra: object) -> dict:
    role = role_in_project(user=request.user, project=run.project)
    state = selectors.review_state(run=run)
    anchors = {
        "lines": {
            str(line): [_comment_json(c) for c in comments]
            for line, comments in state.by_line.items()
        },
        "events": {
            str(seq): [_comment_json(c) for c in comments] for seq, comments in state.by_seq.items()
        },
    }
    return {
        "run": run,
        "state": state,
        "anchors": anchors,
        "role": role,
        "can_review": role in ("owner", "admin", "member"),
        "can_share": role in ("owner", "admin"),
        "verdicts": Verdict.choices,
        "now": timezone.now(),
        "share_links": selectors.share_links_of(run=run) if role in ("owner", "admin") else [],
        **extra,
    }


def _comment_json(comment) -> dict:
    # Plain text: the page's script puts it in with textContent, never as markup.
    return {
        "id": comment.pk,
        "author": comment.author.get_username() if comment.author else "deleted user",
        "at": comment.created_at.isoformat(),
        "body": comment.body,
    }


def _respond(request: HttpRequest, run: Run, **extra: object) -> HttpResponse:
    if request.htmx:
        status = 400 if extra.get("error") else 200
        return render(
            request, "reviews/_panel.html", _panel_context(request, run, **extra), status=status
        )
    if extra.get("error"):
        messages.error(request, str(extra["error"]))
    return redirect("runs:detail", run_id=run.pk)


def _error(exc: ValidationError) -> str:
    return "; ".join(exc.messages)


def _int_or_none(value: str | None) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValidationError("Line and event must be numbers.") from None


@login_required
@require_GET
def panel(request: HttpRequest, run_id: int) -> HttpResponse:
    run = run_selectors.get_run_for_user(user=request.user, run_id=run_id)
    return render(request, "reviews/_panel.html", _panel_context(request, run))


@login_required
@require_POST
def comment_add(request: HttpRequest, run_id: int) -> HttpResponse:
    run = run_selectors.get_run_for_user(user=request.user, run_id=run_id)
    try:
        services.add_comment(
            run=run,
            user=request.user,
            body=request.POST.get("body", ""),
            line=_int_or_none(request.POST.get("line")),
            seq=_int_or_none(request.POST.get("seq")),
        )
    except ValidationError as exc:
        return _respond(request, run, error=_error(exc))
    return _respond(request, run)


@login_required
@require_POST
def comment_delete(request: HttpRequest, run_id: int, comment_id: int) -> HttpResponse:
    run = run_selectors.get_run_for_user(user=request.user, run_id=run_id)
    comment = selectors.get_comment_for_user(user=request.user, run=run, comment_id=comment_id)
    services.delete_comment(comment=comment, user=request.user)
    return _respond(request, run)


@login_required
@require_POST
def verdict(request: HttpRequest, run_id: int) -> HttpResponse:
    run = run_selectors.get_run_for_user(user=request.user, run_id=run_id)
    try:
        services.set_verdict(
            run=run,
            user=request.user,
            verdict=request.POST.get("verdict", ""),
            note=request.POST.get("note", ""),
        )
    except ValidationError as exc:
        return _respond(request, run, error=_error(exc))
    return _respond(request, run)


@login_required
@require_POST
def labels(request: HttpRequest, run_id: int) -> HttpResponse:
    run = run_selectors.get_run_for_user(user=request.user, run_id=run_id)
    try:
        if request.POST.get("remove"):
            services.remove_label(run=run, user=request.user, name=request.POST["remove"])
        else:
            services.add_label(run=run, user=request.user, name=request.POST.get("label", ""))
    except ValidationError as exc:
        return _respond(request, run, error=_error(exc))
    return _respond(request, run)


@login_required
@require_POST
def assign(request: HttpRequest, run_id: int) -> HttpResponse:
    run = run_selectors.get_run_for_user(user=request.user, run_id=run_id)
    try:
        services.assign_reviewer(
            run=run, user=request.user, reviewer_name=request.POST.get("reviewer", "")
        )
    except ValidationError as exc:
        return _respond(request, run, error=_error(exc))
    return _respond(request, run)


@login_required
@require_POST
def share_create(request: HttpRequest, run_id: int) -> HttpResponse:
    run = run_selectors.get_run_for_user(user=request.user, run_id=run_id)
    try:
        days = int(request.POST.get("days") or 7)
        _link, token = services.create_share_link(run=run, user=request.user, days=days)
    except ValueError:
        return _respond(request, run, error="Days must be a number.")
    except ValidationError as exc:
        return _respond(request, run, error=_error(exc))
    url = request.build_absolute_uri(f"/review/shared/{token}/")
    if request.htmx:
        return _respond(request, run, new_share_url=url)
    messages.success(request, f"Share link (shown once): {url}")
    return redirect("runs:detail", run_id=run.pk)


@login_required
@require_POST
def share_revoke(request: HttpRequest, run_id: int, link_id: int) -> HttpResponse:
    run = run_selectors.get_run_for_user(user=request.user, run_id=run_id)
    try:
        link = ShareLink.objects.select_related("run__project").get(pk=link_id, run=run)
    except ShareLink.DoesNotExist:
        raise Http404("No such link") from None
    services.revoke_share_link(link=link, user=request.user)
    return _respond(request, run)


@login_required
@require_GET
def queue(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "reviews/queue.html",
        {"runs": selectors.waiting_for_review(user=request.user)},
    )


@login_required
@require_GET
def compare(request: HttpRequest) -> HttpResponse:
    ids = request.GET.getlist("run")
    if len(ids) != 2:
        return HttpResponseBadRequest("Pick exactly two runs to compare.")
    a = run_selectors.get_run_for_user(user=request.user, run_id=ids[0])
    b = run_selectors.get_run_for_user(user=request.user, run_id=ids[1])
    return render(
        request, "reviews/compare.html", {"a": a, "b": b, **selectors.compare_runs(a=a, b=b)}
    )


@require_GET
def shared(request: HttpRequest, token: str) -> HttpResponse:
    """The read-only page behind a share link: no login, no actions, no live socket."""
    run, link = selectors.get_shared_run(token=token)
    services.note_share_use(link=link)
    lines = run_selectors.log_tail(run=run, count=2000)
    response = render(
        request,
        "reviews/shared.html",
        {
            "run": run,
            "link": link,
            "lines": lines,
            "timeline": run_selectors.timeline_events(run=run),
            "state": selectors.review_state(run=run),
            "artifacts": run_selectors.artifacts_of(run=run),
        },
    )
    # The token is in the URL: keep it out of caches and Referer headers.
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex"
    return response
