"""Review of runs: comments (on the run, a log line or a timeline event), a verdict, labels, an
assigned reviewer, and read-only share links."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Verdict(models.TextChoices):
    APPROVED = "approved", "Approved"
    NEEDS_WORK = "needs_work", "Needs work"
    REJECTED = "rejected", "Rejected"


class RunReview(models.Model):
    """The run's review state: at most one row per run, created on first use."""

    run = models.OneToOneField("runs.Run", on_delete=models.CASCADE, related_name="review")
    verdict = models.CharField(max_length=12, choices=Verdict.choices, blank=True)
    verdict_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    verdict_at = models.DateTimeField(null=True, blank=True)
    verdict_note = models.CharField(max_length=500, blank=True)
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="runs_to_review",
    )
    assigned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    assigned_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["reviewer", "verdict"], name="review_reviewer_verdict"),
            models.Index(fields=["verdict"], name="review_verdict"),
        ]

    def __str__(self) -> str:
        return f"review of run {self.run_id}: {self.verdict or 'none'}"


class Comment(models.Model):
    class Anchor(models.TextChoices):
        RUN = "run", "Run"
        LINE = "line", "Log line"
        EVENT = "event", "Timeline event"

    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="comments")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    body = models.TextField(max_length=10_000)
    anchor = models.CharField(max_length=8, choices=Anchor.choices, default=Anchor.RUN)
    line = models.BigIntegerField(null=True, blank=True)  # log line number, from 1
    seq = models.BigIntegerField(null=True, blank=True)  # timeline event seq
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "pk"]
        indexes = [models.Index(fields=["run", "anchor", "line"], name="comment_run_anchor")]

    def __str__(self) -> str:
        return f"comment {self.pk} on run {self.run_id}"


class RunLabel(models.Model):
    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="labels")
    name = models.CharField(max_length=40)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="run_label_unique")]
        indexes = [models.Index(fields=["name"], name="run_label_name")]

    def __str__(self) -> str:
        return self.name


class ShareLink(models.Model):
    """A read-only link to one run. Only the SHA-256 of the token is stored; the token itself is
    shown once, when the link is made."""

    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="share_links")
    token_hash = models.CharField(max_length=64, unique=True)
    token_hint = models.CharField(max_length=8)  # the first characters, to tell links apart
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    use_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"share {self.token_hint}… of run {self.run_id}"
