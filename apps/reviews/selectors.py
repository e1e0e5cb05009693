"""Reads of run review: the panel's data, the review queue, share-link resolution, comparison,
and the history filters (verdict, label, reviewer, has comments)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import Http404
from django.utils import timezone

from apps.runs.models import Run, RunEvent
from apps.runs.selectors import runs_visible_to

from .models import Comment, RunLabel, RunReview, ShareLink


@dataclass
class ReviewState:
    review: RunReview | None
    comments: list[Comment]
    labels: list[str]
    by_line: dict[int, list[Comment]] = field(default_factory=dict)
    by_seq: dict[int, list[Comment]] = field(default_factory=dict)
    general: list[Comment] = field(default_factory=list)


def review_state(*, run: Run) -> ReviewState:
    comments = list(Comment.objects.filter(run=run).select_related("author"))
    state = ReviewState(
        review=RunReview.objects.filter(run=run).select_related("verdict_by", "reviewer").first(),
        comments=comments,
        labels=list(RunLabel.objects.filter(run=run).values_list("name", flat=True)),
    )
    for comment in comments:
        if comment.anchor == Comment.Anchor.LINE:
            state.by_line.setdefault(comment.line, []).append(comment)
        elif comment.anchor == Comment.Anchor.EVENT:
            state.by_seq.setdefault(comment.seq, []).append(comment)
        else:
            state.general.append(comment)
    return state


def get_comment_for_user(*, user: Any, run: Run, comment_id: Any) -> Comment:
    try:
        return Comment.objects.select_related("run__project").get(pk=int(comment_id), run=run)
    except (Comment.DoesNotExist, TypeError, ValueError):
        raise Http404("No such comment") from None


def waiting_for_review(*, user: Any) -> QuerySet[Run]:
    """Runs assigned to ``user`` without a verdict yet (that they can still see)."""
    return (
        runs_visible_to(user)
        .filter(review__reviewer_id=user.pk)
        .filter(Q(review__verdict="") | Q(review__verdict__isnull=True))
        .select_related("project", "user", "review__assigned_by")
        .order_by("review__assigned_at", "pk")
    )


def share_links_of(*, run: Run) -> QuerySet[ShareLink]:
    return ShareLink.objects.filter(run=run).select_related("created_by")


def get_shared_run(*, token: str) -> tuple[Run, ShareLink]:
    """The run behind a live share token; 404 for unknown, revoked or expired tokens alike."""
    from .services import hash_token

    link = (
        ShareLink.objects.filter(
            token_hash=hash_token(token or ""),
            revoked_at__isnull=True,
            expires_at__gt=timezone.now(),
        )
        .select_related("run__project", "run__user")
        .first()
    )
    if link is None:
        raise Http404("This link is unknown, expired or revoked.")
    return link.run, link


def filter_by_review(queryset: QuerySet[Run], params: Any) -> QuerySet[Run]:
    """History filters: ``verdict`` (approved|needs_work|rejected|none), ``label``,
    ``reviewer`` (username), ``has_comments`` (1|0)."""
    verdict = (params.get("verdict") or "").strip()
    if verdict == "none":
        queryset = queryset.filter(Q(review__isnull=True) | Q(review__verdict=""))
    elif verdict:
        queryset = queryset.filter(review__verdict=verdict)
    label = (params.get("label") or "").strip().lower()
    if label:
        queryset = queryset.filter(
            Exists(RunLabel.objects.filter(run_id=OuterRef("pk"), name=label))
        )
    reviewer = (params.get("reviewer") or "").strip()
    if reviewer:
        queryset = queryset.filter(review__reviewer__username__iexact=reviewer)
    has_comments = params.get("has_comments")
    if has_comments in ("1", "0"):
        exists = Exists(Comment.objects.filter(run_id=OuterRef("pk")))
        queryset = queryset.filter(exists if has_comments == "1" else ~exists)
    return queryset


@dataclass
class CompareRow:
    label: str
    a: str
    b: str

    @property
    def differs(self) -> bool:
        return self.a != self.b


def _changed_files(run: Run) -> dict[str, int]:
    row = (
        RunEvent.objects.filter(run_id=run.pk, type="files")
        .order_by("-seq")
        .values_list("data", flat=True)
        .first()
    )
    return {path: size for path, size, is_dir in (row or {}).get("entries", []) if not is_dir}


def compare_runs(*, a: Run, b: Run) -> dict[str, Any]:
    def secs(run: Run) -> str:
        return f"{run.duration_ms / 1000:.1f} s" if run.duration_ms else "—"

    rows = [
        CompareRow("Project", a.project.name, b.project.name),
        CompareRow("Status", a.get_status_display(), b.get_status_display()),
        CompareRow("End reason", a.end_reason or "—", b.end_reason or "—"),
        CompareRow("Duration", secs(a), secs(b)),
        CompareRow("Tokens", f"{a.total_tokens:,}", f"{b.total_tokens:,}"),
        CompareRow("Cost", f"${a.cost_usd:.4f}", f"${b.cost_usd:.4f}"),
        CompareRow(
            "Peak memory",
            f"{a.peak_memory_mb:.0f} MB" if a.peak_memory_mb else "—",
            f"{b.peak_memory_mb:.0f} MB" if b.peak_memory_mb else "—",
        ),
        CompareRow("Turns", str(a.turns), str(b.turns)),
        CompareRow("Log lines", f"{a.log_lines:,}", f"{b.log_lines:,}"),
        CompareRow(
            "Exit code",
            str(a.exit_code if a.exit_code is not None else "—"),
            str(b.exit_code if b.exit_code is not None else "—"),
        ),
    ]
    files_a, files_b = _changed_files(a), _changed_files(b)
    files = []
    for path in sorted(set(files_a) | set(files_b)):
        size_a, size_b = files_a.get(path), files_b.get(path)
        state = (
            "only in A"
            if size_b is None
            else "only in B"
            if size_a is None
            else ("same size" if size_a == size_b else "different size")
        )
        files.append({"path": path, "a": size_a, "b": size_b, "state": state})
    return {"rows": rows, "files": files}
