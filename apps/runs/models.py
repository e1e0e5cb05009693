"""Runs, their durable event log and their artifacts.

The database is the source of truth for a run: its state, who holds it (lease), and every event
it produced, each with a per-run gap-free ``seq``. The channel layer only rings the bell.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.projects.models import Project


class Run(models.Model):
    class Kind(models.TextChoices):
        AGENT = "agent", "Agent"
        SCRIPT = "script", "Script"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        PROVISIONING = "provisioning", "Provisioning"
        RUNNING = "running", "Running"
        CANCELLING = "cancelling", "Cancelling"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        TIMED_OUT = "timed_out", "Timed out"
        OOM = "oom", "Out of memory"
        CANCELLED = "cancelled", "Cancelled"
        CRASHED = "crashed", "Crashed"
        ERROR = "error", "Error"

    ACTIVE = frozenset({Status.QUEUED, Status.PROVISIONING, Status.RUNNING, Status.CANCELLING})
    TERMINAL = frozenset(
        {
            Status.SUCCEEDED,
            Status.FAILED,
            Status.TIMED_OUT,
            Status.OOM,
            Status.CANCELLED,
            Status.CRASHED,
            Status.ERROR,
        }
    )

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="runs")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        related_name="runs",
        help_text="Who launched it.",
    )
    rerun_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="reruns"
    )
    kind = models.CharField(max_length=10, choices=Kind.choices)
    task = models.TextField(blank=True)
    commands = models.JSONField(default=list, blank=True)
    overrides = models.JSONField(default=dict, blank=True)
    # The effective settings after overrides and clamping: what the worker runs with.
    config = models.JSONField(default=dict)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    status_message = models.CharField(max_length=300, blank=True)
    end_reason = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True)

    # Claim / lease: see apps/runs/execution.py.
    attempt = models.PositiveSmallIntegerField(default=0)
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    sandbox_id = models.CharField(max_length=100, blank=True)
    deadline = models.DateTimeField(null=True, blank=True)
    last_seq = models.BigIntegerField(default=0)

    created_at = models.DateTimeField(auto_now_add=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.BigIntegerField(default=0)

    # Totals kept current by the recorder, for headers and history columns.
    turns = models.PositiveIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    total_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    peak_memory_mb = models.FloatField(null=True, blank=True)
    log_lines = models.BigIntegerField(default=0)
    log_bytes = models.BigIntegerField(default=0)
    log_dropped_bytes = models.BigIntegerField(default=0)
    exit_code = models.IntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["-created_at", "-id"], name="run_created"),
            models.Index(fields=["project", "-created_at", "-id"], name="run_project_created"),
            models.Index(fields=["user", "-created_at", "-id"], name="run_user_created"),
            models.Index(fields=["status", "-created_at", "-id"], name="run_status_created"),
            # Sorting the history by a column walks one of these (either direction).
            models.Index(fields=["cost_usd", "id"], name="run_cost"),
            models.Index(fields=["duration_ms", "id"], name="run_duration"),
            models.Index(fields=["total_tokens", "id"], name="run_tokens"),
            models.Index(fields=["project", "cost_usd", "id"], name="run_project_cost"),
            models.Index(fields=["project", "duration_ms", "id"], name="run_project_duration"),
            models.Index(
                fields=["status", "lease_expires_at"],
                name="run_active_lease",
                condition=Q(status__in=["queued", "provisioning", "running", "cancelling"]),
            ),
        ]

    def __str__(self) -> str:
        return f"Run #{self.pk}"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE


class RunEvent(models.Model):
    """One entry of a run's durable log. ``seq`` is per run, gap-free, from 1.

    Log output is stored as batches of whole lines: ``text`` holds them joined by newlines,
    ``line_start`` is the number of the first one (from 1) and ``line_count`` how many, so the
    tail, a window around line N and a search can be read without touching other events.
    """

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    seq = models.BigIntegerField()
    type = models.CharField(max_length=32)
    ts = models.DateTimeField()
    data = models.JSONField(default=dict)
    text = models.TextField(blank=True)
    line_start = models.BigIntegerField(null=True, blank=True)
    line_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["run", "seq"], name="run_event_seq_unique"),
        ]
        indexes = [
            models.Index(fields=["run", "type", "seq"], name="run_event_type"),
            models.Index(
                fields=["run", "line_start"],
                name="run_event_lines",
                condition=Q(line_start__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.run_id}#{self.seq} {self.type}"


class Artifact(models.Model):
    """A file captured from the workspace at the end of a run. Served by id, as an attachment."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="artifacts")
    path = models.CharField(max_length=1024)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    content = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["path"]
        constraints = [
            models.UniqueConstraint(fields=["run", "path"], name="artifact_path_unique"),
        ]

    def __str__(self) -> str:
        return self.path

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]
