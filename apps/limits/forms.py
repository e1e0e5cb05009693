from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from apps.projects.models import Project

from .models import LimitPolicy

LIST_HELP = "Comma or newline separated; empty = inherit from the level below."


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.replace(",", "\n").splitlines() if part.strip()]


class LimitPolicyForm(forms.ModelForm):
    """One row of limits. Empty fields inherit (user → team → instance → hardware ceiling)."""

    allowed_network_modes = forms.MultipleChoiceField(
        required=False,
        choices=Project.NetworkMode.choices,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked = inherit.",
    )
    allowed_images = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "class": "mono"}),
        help_text="Glob patterns, e.g. sandboxweb/* or python:3.*. " + LIST_HELP,
    )
    allowed_providers = forms.CharField(required=False, help_text="e.g. docker, e2b. " + LIST_HELP)

    class Meta:
        model = LimitPolicy
        fields = [
            "max_concurrent_runs",
            "max_memory_mb",
            "max_cpu_cores",
            "max_disk_mb",
            "max_timeout_seconds",
            "allowed_network_modes",
            "allowed_images",
            "allowed_providers",
            "monthly_token_budget",
            "monthly_cost_budget_usd",
        ]
        labels = {
            "max_concurrent_runs": "Concurrent runs",
            "max_memory_mb": "Max memory (MB)",
            "max_cpu_cores": "Max CPU cores",
            "max_disk_mb": "Max disk (MB)",
            "max_timeout_seconds": "Max wall-clock (s)",
            "monthly_token_budget": "Monthly tokens",
            "monthly_cost_budget_usd": "Monthly cost (USD)",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        instance = self.instance
        if not self.is_bound and instance.pk:
            self.initial["allowed_network_modes"] = instance.allowed_network_modes or []
            self.initial["allowed_images"] = "\n".join(instance.allowed_images or [])
            self.initial["allowed_providers"] = ", ".join(instance.allowed_providers or [])
        for name in (
            "max_memory_mb",
            "max_cpu_cores",
            "max_disk_mb",
            "max_timeout_seconds",
            "max_concurrent_runs",
            "monthly_token_budget",
            "monthly_cost_budget_usd",
        ):
            self.fields[name].widget.attrs["placeholder"] = "inherit"
        self.fields["max_cpu_cores"].widget.attrs["step"] = "0.1"

    def clean_allowed_network_modes(self) -> list[str] | None:
        return list(self.cleaned_data.get("allowed_network_modes") or []) or None

    def clean_allowed_images(self) -> list[str] | None:
        patterns = _split(self.cleaned_data.get("allowed_images") or "")
        for pattern in patterns:
            if len(pattern) > 255 or any(c.isspace() for c in pattern):
                raise ValidationError(f"{pattern!r} is not an image pattern.")
        return patterns or None

    def clean_allowed_providers(self) -> list[str] | None:
        from apps.sandboxes import registered_providers

        providers = _split(self.cleaned_data.get("allowed_providers") or "")
        known = set(registered_providers()) | {"docker", "e2b"}
        unknown = [p for p in providers if p not in known]
        if unknown:
            raise ValidationError(f"Unknown provider(s): {', '.join(unknown)}.")
        return providers or None

    def clean_max_cpu_cores(self) -> float | None:
        value = self.cleaned_data.get("max_cpu_cores")
        if value is not None and value < 0.1:
            raise ValidationError("At least 0.1 cores.")
        return value

    def values(self) -> dict[str, Any]:
        return {name: self.cleaned_data.get(name) for name in self.Meta.fields}
