"""A project: what to run (agent or script), where (sandbox settings) and with which secrets.

Every run snapshots the project's settings at launch (``Run.config``), so editing a project never
changes what a past run did or how its page looks.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower

from apps.agents import DEFAULT_MODEL

from .validation import DEFAULT_E2B_TEMPLATE

DEFAULT_SYSTEM_PROMPT = (
    "You are a careful software engineer working in a sandboxed Linux workspace at /workspace. "
    "Use the tools to inspect, change and test files. Keep changes small and explain what you did."
)


def default_system_prompt() -> str:
    return DEFAULT_SYSTEM_PROMPT


class Project(models.Model):
    class Kind(models.TextChoices):
        AGENT = "agent", "Agent (Claude)"
        SCRIPT = "script", "Script (commands)"

    class NetworkMode(models.TextChoices):
        NONE = "none", "No network"
        ISOLATED = "isolated", "Isolated (no internet)"
        BRIDGE = "bridge", "Internet access"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="projects"
    )
    # Optional: a team project and its runs are visible to the team's members by role.
    team = models.ForeignKey(
        "teams.Team",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="projects",
    )
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    default_kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.AGENT)

    # Sandbox
    provider = models.CharField(max_length=20, default="docker")
    image = models.CharField(max_length=255, blank=True, help_text="Empty: the default image.")
    cpu_cores = models.FloatField(default=1.0)
    memory_mb = models.PositiveIntegerField(default=1024)
    disk_mb = models.PositiveIntegerField(default=1024)
    timeout_seconds = models.PositiveIntegerField(default=900)
    network_mode = models.CharField(
        max_length=10, choices=NetworkMode.choices, default=NetworkMode.NONE
    )
    env = models.JSONField(default=dict, blank=True)
    log_limit_mb = models.PositiveIntegerField(default=16)

    # Agent
    system_prompt = models.TextField(default=default_system_prompt, blank=True)
    model = models.CharField(max_length=100, default=DEFAULT_MODEL)
    max_turns = models.PositiveIntegerField(default=30)
    max_tokens_total = models.PositiveBigIntegerField(null=True, blank=True)
    max_cost_usd = models.DecimalField(max_digits=10, decimal_places=2, null=True, blank=True)
    capture_patterns = models.JSONField(default=list, blank=True)

    # Script
    default_commands = models.TextField(blank=True)

    archived_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint("owner", Lower("name"), name="project_name_unique_per_owner"),
        ]
        indexes = [models.Index(fields=["owner", "archived_at"], name="project_owner_archived")]

    def __str__(self) -> str:
        return self.name

    @property
    def is_archived(self) -> bool:
        return self.archived_at is not None

    @property
    def image_or_default(self) -> str:
        """The Docker image, or for E2B the template name."""
        if self.provider == "e2b":
            return self.image or DEFAULT_E2B_TEMPLATE
        return self.image or settings.SANDBOX_IMAGE


class ProjectSecret(models.Model):
    """A write-only secret: stored encrypted (apps/projects/crypto.py), shown by name only.

    It reaches a sandbox only where the project's env asks for it (``TOKEN=${secret:TOKEN}``);
    every run also redacts its value from stored output.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="secrets")
    name = models.CharField(max_length=64)
    ciphertext = models.TextField()
    fingerprint = models.CharField(max_length=16)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="secret_name_unique")
        ]

    def __str__(self) -> str:
        return f"{self.project_id}:{self.name}"
