"""/api/v1/runs/{id}/review, comments and verdict: what the run page's review panel does."""

from __future__ import annotations

from django.http import Http404, HttpRequest
from django.utils import timezone
from ninja import Query, Router, Status

from apps.reviews import selectors as review_selectors
from apps.reviews import services as review_services
from apps.runs.selectors import get_run_for_user
from apps.teams.selectors import require_project_role

from ..auth import token_auth
from ..schemas import (
    CommentIn,
    CommentOut,
    Id,
    LabelIn,
    ReviewerIn,
    ReviewOut,
    ShareLinkCreatedOut,
    ShareLinkIn,
    ShareLinkListOut,
    ShareLinkOut,
    VerdictIn,
    WaitingListOut,
    text,
)
from .common import ERRORS, errors

router = Router(tags=["reviews"])
READ = token_auth("reviews:read")
WRITE = token_auth("reviews:write")


def _username(user) -> str | None:
    return user.get_username() if user else None


def comment_out(comment) -> dict:
    return {
        "id": comment.pk,
        "author": _username(comment.author),
        "body": comment.body,
        "anchor": comment.anchor,
        "line": comment.line,
        "seq": comment.seq,
        "created_at": comment.created_at,
    }


def review_out(run) -> dict:
    state = review_selectors.review_state(run=run)
    review = state.review
    return {
        "run": run.pk,
        "verdict": review.verdict if review else "",
        "verdict_by": _username(review.verdict_by) if review else None,
        "verdict_at": review.verdict_at if review else None,
        "verdict_note": review.verdict_note if review else "",
        "reviewer": _username(review.reviewer) if review else None,
        "labels": state.labels,
        "comments": [comment_out(c) for c in state.comments],
    }


@router.get(
    "/runs/{run_id}/review",
    auth=READ,
    response={200: ReviewOut, **ERRORS},
    summary="The run's verdict, reviewer, labels and comments",
)
def get_review(request: HttpRequest, run_id: Id) -> dict:
    return review_out(get_run_for_user(user=request.user, run_id=run_id))


@router.put(
    "/runs/{run_id}/verdict",
    auth=WRITE,
    response={200: ReviewOut, **ERRORS},
    summary="Give (or clear) the run's verdict",
)
def set_verdict(request: HttpRequest, run_id: Id, payload: VerdictIn) -> dict:
    run = get_run_for_user(user=request.user, run_id=run_id)
    review_services.set_verdict(
        run=run, user=request.user, verdict=payload.verdict, note=payload.note
    )
    return review_out(run)


@router.post(
    "/runs/{run_id}/comments",
    auth=WRITE,
    response={201: CommentOut, **ERRORS},
    summary="Comment on the run, a log line or an event",
)
def add_comment(request: HttpRequest, run_id: Id, payload: CommentIn) -> Status:
    run = get_run_for_user(user=request.user, run_id=run_id)
    comment = review_services.add_comment(
        run=run, user=request.user, body=payload.body, line=payload.line, seq=payload.seq
    )
    return Status(201, comment_out(comment))


@router.delete(
    "/runs/{run_id}/comments/{comment_id}",
    auth=WRITE,
    response={204: None, **ERRORS},
    summary="Delete a comment (your own; project admins any)",
)
def delete_comment(request: HttpRequest, run_id: Id, comment_id: Id) -> Status:
    run = get_run_for_user(user=request.user, run_id=run_id)
    comment = review_selectors.get_comment_for_user(
        user=request.user, run=run, comment_id=comment_id
    )
    review_services.delete_comment(comment=comment, user=request.user)
    return Status(204, None)


# -- labels and reviewer -------------------------------------------------------------------------


@router.post(
    "/runs/{run_id}/labels",
    auth=WRITE,
    response={200: ReviewOut, **ERRORS},
    summary="Add a label to the run (adding one it has is harmless)",
)
def add_label(request: HttpRequest, run_id: Id, payload: LabelIn) -> dict:
    run = get_run_for_user(user=request.user, run_id=run_id)
    review_services.add_label(run=run, user=request.user, name=payload.label)
    return review_out(run)


@router.delete(
    "/runs/{run_id}/labels",
    auth=WRITE,
    response={200: ReviewOut, **ERRORS},
    summary="Remove a label from the run (?label=; removing one it lacks is harmless)",
)
def remove_label(request: HttpRequest, run_id: Id, label: Query[text(200)]) -> dict:
    run = get_run_for_user(user=request.user, run_id=run_id)
    review_services.remove_label(run=run, user=request.user, name=label.strip().lower())
    return review_out(run)


@router.put(
    "/runs/{run_id}/reviewer",
    auth=WRITE,
    response={200: ReviewOut, **ERRORS},
    summary="Assign the run's reviewer (null unassigns)",
)
def assign_reviewer(request: HttpRequest, run_id: Id, payload: ReviewerIn) -> dict:
    run = get_run_for_user(user=request.user, run_id=run_id)
    review_services.assign_reviewer(
        run=run, user=request.user, reviewer_name=(payload.reviewer or "").strip()
    )
    return review_out(run)


@router.delete(
    "/runs/{run_id}/reviewer",
    auth=WRITE,
    response={200: ReviewOut, **ERRORS},
    summary="Unassign the run's reviewer",
)
def unassign_reviewer(request: HttpRequest, run_id: Id) -> dict:
    run = get_run_for_user(user=request.user, run_id=run_id)
    review_services.assign_reviewer(run=run, user=request.user, reviewer_name="")
    return review_out(run)


@router.get(
    "/reviews/waiting",
    auth=READ,
    response={200: WaitingListOut, **errors(401, 403, 429)},
    summary="Waiting for my review: runs assigned to the caller without a verdict",
)
def waiting(request: HttpRequest) -> dict:
    runs = review_selectors.waiting_for_review(user=request.user)
    return {
        "items": [
            {
                "run": run.pk,
                "project": run.project_id,
                "project_name": run.project.name,
                "status": run.status,
                "task": run.task,
                "launched_by": _username(run.user),
                "created_at": run.created_at,
                "assigned_by": _username(run.review.assigned_by),
                "assigned_at": run.review.assigned_at,
                "url": f"/api/v1/runs/{run.pk}",
            }
            for run in runs
        ]
    }


# -- share links ---------------------------------------------------------------------------------


def share_link_out(link) -> dict:
    return {
        "id": link.pk,
        "run": link.run_id,
        "hint": link.token_hint,
        "created_by": _username(link.created_by),
        "created_at": link.created_at,
        "expires_at": link.expires_at,
        "revoked_at": link.revoked_at,
        "last_used_at": link.last_used_at,
        "active": link.revoked_at is None and link.expires_at > timezone.now(),
    }


@router.get(
    "/runs/{run_id}/share-links",
    auth=READ,
    response={200: ShareLinkListOut, **ERRORS},
    summary="The run's share links, newest first (project admins)",
)
def list_share_links(request: HttpRequest, run_id: Id) -> dict:
    run = get_run_for_user(user=request.user, run_id=run_id)
    # The run page shows links to admins only; here the others get a 403 that says so.
    require_project_role(user=request.user, project=run.project, min_role="admin")
    return {"items": [share_link_out(link) for link in review_selectors.share_links_of(run=run)]}


@router.post(
    "/runs/{run_id}/share-links",
    auth=WRITE,
    response={201: ShareLinkCreatedOut, **ERRORS},
    summary="Make a read-only share link (project admins); its token is shown once",
)
def create_share_link(request: HttpRequest, run_id: Id, payload: ShareLinkIn) -> Status:
    run = get_run_for_user(user=request.user, run_id=run_id)
    link, token = review_services.create_share_link(run=run, user=request.user, days=payload.days)
    return Status(
        201,
        {
            **share_link_out(link),
            "token": token,
            "url": request.build_absolute_uri(f"/review/shared/{token}/"),
        },
    )


@router.post(
    "/runs/{run_id}/share-links/{link_id}/revoke",
    auth=WRITE,
    response={200: ShareLinkOut, **ERRORS},
    summary="Revoke a share link at once (project admins; twice is harmless)",
)
def revoke_share_link(request: HttpRequest, run_id: Id, link_id: Id) -> dict:
    run = get_run_for_user(user=request.user, run_id=run_id)
    link = (
        review_selectors.share_links_of(run=run)
        .select_related("run__project")
        .filter(pk=link_id)
        .first()
    )
    if link is None:
        raise Http404("No such link")
    return share_link_out(review_services.revoke_share_link(link=link, user=request.user))
