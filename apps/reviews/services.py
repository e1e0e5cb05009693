"""Writes of run review: comments, verdicts, labels, reviewer assignment, share links.

Commenting, judging, labelling and assigning need the member role on the run's project
(viewers read only); share links need admin (they open the run to people outside the team).
Share-link actions are audited in their transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from apps.audit.services import Action, record
from apps.runs.selectors import runs_visible_to
from apps.teams.selectors import require_project_role

from .models import Comment, RunLabel, RunReview, ShareLink, Verdict

MAX_COMMENT = 10_000
LABEL_RE = re.compile(r"^[\w.:/ -]{1,40}$")
SHARE_MAX_DAYS = 90


def _review(run: Any) -> RunReview:
    review, _ = RunReview.objects.get_or_create(run=run)
    return review


@transaction.atomic
def add_comment(
    *, run: Any, user: Any, body: str, line: int | None = None, seq: int | None = None
) -> Comment:
    require_project_role(user=user, project=run.project, min_role="member")
    body = (body or "").replace("\x00", "").strip()
    if not body:
        raise ValidationError({"body": ["Write something."]})
    if len(body) > MAX_COMMENT:
        raise ValidationError({"body": [f"At most {MAX_COMMENT} characters."]})
    anchor = Comment.Anchor.RUN
    if line is not None:
        if not 1 <= line <= max(run.log_lines, 1):
            raise ValidationError({"line": [f"The log has lines 1 to {run.log_lines}."]})
        anchor = Comment.Anchor.LINE
    elif seq is not None:
        if not run.events.filter(seq=seq).exists():
            raise ValidationError({"seq": ["No such event in this run."]})
        anchor = Comment.Anchor.EVENT
    return Comment.objects.create(
        run=run, author=user, body=body, anchor=anchor, line=line, seq=seq
    )


@transaction.atomic
def delete_comment(*, comment: Comment, user: Any) -> None:
    """Authors delete their own comments; project admins anyone's."""
    if comment.author_id != user.pk:
        require_project_role(user=user, project=comment.run.project, min_role="admin")
    comment.delete()


@transaction.atomic
def set_verdict(*, run: Any, user: Any, verdict: str, note: str = "") -> RunReview:
    require_project_role(user=user, project=run.project, min_role="member")
    if verdict not in Verdict.values and verdict != "":
        raise ValidationError({"verdict": ["Choose approved, needs work or rejected."]})
    review = RunReview.objects.select_for_update().filter(run=run).first() or _review(run)
    review.verdict = verdict
    review.verdict_by = user if verdict else None
    review.verdict_at = timezone.now() if verdict else None
    review.verdict_note = (note or "").strip()[:500]
    review.save()
    return review


@transaction.atomic
def add_label(*, run: Any, user: Any, name: str) -> RunLabel:
    require_project_role(user=user, project=run.project, min_role="member")
    name = (name or "").strip().lower()
    if not LABEL_RE.match(name):
        raise ValidationError({"label": ["1-40 letters, digits, spaces or . : / - _"]})
    label, _ = RunLabel.objects.get_or_create(run=run, name=name, defaults={"created_by": user})
    return label


@transaction.atomic
def remove_label(*, run: Any, user: Any, name: str) -> None:
    require_project_role(user=user, project=run.project, min_role="member")
    RunLabel.objects.filter(run=run, name=name).delete()


@transaction.atomic
def assign_reviewer(*, run: Any, user: Any, reviewer_name: str) -> RunReview:
    """``reviewer_name`` empty unassigns. The reviewer must be able to see the run and act on
    it (member or higher), or the assignment would point at someone who cannot review."""
    require_project_role(user=user, project=run.project, min_role="member")
    review = RunReview.objects.select_for_update().filter(run=run).first() or _review(run)
    reviewer = None
    if reviewer_name:
        reviewer = get_user_model().objects.filter(username__iexact=reviewer_name.strip()).first()
        if reviewer is None or not runs_visible_to(reviewer).filter(pk=run.pk).exists():
            raise ValidationError(
                {"reviewer": [f"{reviewer_name} cannot see this run; pick a team member."]}
            )
        try:
            require_project_role(user=reviewer, project=run.project, min_role="member")
        except Exception:
            raise ValidationError(
                {"reviewer": [f"{reviewer_name} is a viewer here and cannot give a verdict."]}
            ) from None
    review.reviewer = reviewer
    review.assigned_by = user if reviewer else None
    review.assigned_at = timezone.now() if reviewer else None
    review.save()
    return review


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def create_share_link(*, run: Any, user: Any, days: int) -> tuple[ShareLink, str]:
    """A read-only link valid for ``days``; returns it and the token (shown once, stored
    hashed)."""
    require_project_role(user=user, project=run.project, min_role="admin")
    if not 1 <= days <= SHARE_MAX_DAYS:
        raise ValidationError({"days": [f"Between 1 and {SHARE_MAX_DAYS} days."]})
    token = secrets.token_urlsafe(32)
    link = ShareLink.objects.create(
        run=run,
        token_hash=hash_token(token),
        token_hint=token[:6],
        created_by=user,
        expires_at=timezone.now() + dt.timedelta(days=days),
    )
    record(
        actor=user,
        action=Action.SHARE_CREATE,
        target=link,
        team_id=run.project.team_id,
        target_repr=f"share {link.token_hint}… of run #{run.pk}",
        after={"run": run.pk, "expires_at": link.expires_at, "hint": link.token_hint},
    )
    return link, token


@transaction.atomic
def revoke_share_link(*, link: ShareLink, user: Any) -> ShareLink:
    require_project_role(user=user, project=link.run.project, min_role="admin")
    if link.revoked_at is None:
        link.revoked_at = timezone.now()
        link.revoked_by = user
        link.save(update_fields=["revoked_at", "revoked_by"])
        record(
            actor=user,
            action=Action.SHARE_REVOKE,
            target=link,
            team_id=link.run.project.team_id,
            target_repr=f"share {link.token_hint}… of run #{link.run_id}",
            before={"revoked": False},
            after={"revoked": True},
        )
    return link


def note_share_use(*, link: ShareLink) -> None:
    ShareLink.objects.filter(pk=link.pk).update(last_used_at=timezone.now())
