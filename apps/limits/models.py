"""Admin-managed limits: one instance default row, optional per-team and per-user overrides.

A null field means "not set here": the value comes from the next row down (user → team →
instance → the hardware ceiling in ``settings.RUN_LIMITS``). Concurrency and the monthly
budgets are *scoped*: the team's figure applies to all runs of the team's projects, the user's
figure to all runs the user launches; both are checked.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class LimitPolicy(models.Model):
    class Scope(models.TextChoices):
        INSTANCE = "instance", "Instance default"
        TEAM = "team", "Team"
        USER = "user", "User"

    scope = models.CharField(max_length=10, choices=Scope.choices)
    team = models.OneToOneField(
        "teams.Team", on_delete=models.CASCADE, null=True, blank=True, related_name="limits"
    )
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="run_limits",
    )

    max_concurrent_runs = models.PositiveIntegerField(null=True, blank=True)
    max_memory_mb = models.PositiveIntegerField(null=True, blank=True)
    max_cpu_cores = models.FloatField(null=True, blank=True)
    max_disk_mb = models.PositiveIntegerField(null=True, blank=True)
    max_timeout_seconds = models.PositiveIntegerField(null=True, blank=True)
    allowed_network_modes = models.JSONField(null=True, blank=True)
    allowed_images = models.JSONField(null=True, blank=True)
    allowed_providers = models.JSONField(null=True, blank=True)
    monthly_token_budget = models.PositiveBigIntegerField(null=True, blank=True)
    monthly_cost_budget_usd = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True
    )

    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["scope"],
                condition=models.Q(scope="instance"),
                name="limit_one_instance_row",
            ),
            models.CheckConstraint(
                condition=(
                    models.Q(scope="instance", team__isnull=True, user__isnull=True)
                    | models.Q(scope="team", team__isnull=False, user__isnull=True)
                    | models.Q(scope="user", team__isnull=True, user__isnull=False)
                ),
                name="limit_scope_matches_target",
            ),
        ]

    def __str__(self) -> str:
        if self.scope == self.Scope.TEAM:
            return f"team {self.team}"
        if self.scope == self.Scope.USER:
            return f"user {self.user}"
        return "instance default"


class ScopeLock(models.Model):
    """One row per team / user, locked with SELECT ... FOR UPDATE while deciding whether a run
    may start, so racing claims for the last slot serialize on it."""

    key = models.CharField(max_length=40, unique=True)

    def __str__(self) -> str:
        return self.key
