"""/api/v1/runs/{id}/review, comments and verdict: what the run page's review panel does."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router, Status

from apps.reviews import selectors as review_selectors
from apps.reviews import services as review_services
from apps.runs.selectors import get_run_for_user

from ..auth import token_auth
from ..schemas import CommentIn, CommentOut, Id, ReviewOut, VerdictIn
from .common import ERRORS

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
