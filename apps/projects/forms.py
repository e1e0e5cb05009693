from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from apps.sandboxes import registered_providers

from . import limits, validation
from .models import Project

# Service field -> form field, for errors raised by the services.
FORM_FIELD_FOR = {"env": "env_text", "capture_patterns": "capture_text", "secrets": "secrets_text"}


def _limit_help(name: str, unit: str) -> str:
    return f"{limits.minimum(name):g} to {limits.maximum(name):g} {unit} (admin limit)."


class ProjectForm(forms.ModelForm):
    env_text = forms.CharField(
        label="Environment variables",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false", "class": "mono"}),
        help_text="NAME=value, one per line. Use NAME=${secret:NAME} to pass a secret into "
        "the sandbox; secrets not referenced here never enter it.",
    )
    capture_text = forms.CharField(
        label="Capture files",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "mono"}),
        help_text="Glob patterns relative to /workspace, one per line (e.g. out/** or *.md). "
        "Matching files become downloadable artifacts when the run ends.",
    )
    secrets_text = forms.CharField(
        label="Add or replace secrets",
        required=False,
        strip=False,
        widget=forms.Textarea(
            attrs={"rows": 3, "spellcheck": "false", "autocomplete": "off", "class": "mono"}
        ),
        help_text="NAME=value, one per line. Values are encrypted and can never be shown again.",
    )
    delete_secrets = forms.MultipleChoiceField(
        label="Delete secrets", required=False, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = Project
        fields = [
            "name",
            "team",
            "description",
            "default_kind",
            "provider",
            "image",
            "cpu_cores",
            "memory_mb",
            "disk_mb",
            "timeout_seconds",
            "network_mode",
            "log_limit_mb",
            "system_prompt",
            "model",
            "max_turns",
            "max_tokens_total",
            "max_cost_usd",
            "default_commands",
        ]
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2}),
            "default_kind": forms.RadioSelect,
            "system_prompt": forms.Textarea(attrs={"rows": 5}),
            "default_commands": forms.Textarea(
                attrs={"rows": 4, "spellcheck": "false", "class": "mono"}
            ),
        }
        labels = {
            "default_kind": "Runs are",
            "cpu_cores": "CPU cores",
            "memory_mb": "Memory (MB)",
            "disk_mb": "Disk (MB)",
            "timeout_seconds": "Timeout (seconds)",
            "log_limit_mb": "Log limit (MB)",
            "max_tokens_total": "Token budget",
            "max_cost_usd": "Cost budget (USD)",
            "default_commands": "Default commands",
        }
        help_texts = {
            "image": "Docker image; empty uses the default sandbox image. On E2B: the template "
            "name (empty: base).",
            "default_commands": "For script runs: one shell command per line, run in order; "
            "the first failing command fails the run.",
            "max_tokens_total": "Stop the agent when a run has used this many tokens.",
            "max_cost_usd": "Stop the agent when a run has cost this much.",
        }

    def __init__(self, *args: Any, user: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from apps.teams.selectors import teams_where

        # Only teams where the user may launch; the view 404s/403s forged or read-only ids first.
        # Its current team stays selectable for whoever may edit the project.
        self.fields["team"].queryset = teams_where(
            user=user, min_role="member", also=self.instance.team_id
        )
        self.fields["team"].required = False
        self.fields["team"].empty_label = "Personal (only me)"
        self.fields[
            "team"
        ].help_text = (
            "Team members see the project and its runs; members can launch, viewers only read."
        )
        providers = registered_providers()
        e2b_label = (
            "E2B (cloud)"
            if settings.E2B_API_KEY
            else "E2B (cloud; needs a project secret E2B_API_KEY)"
        )
        self.fields["provider"] = forms.ChoiceField(
            choices=[
                (name, {"docker": "Docker", "e2b": e2b_label}.get(name, name)) for name in providers
            ],
            initial="docker",
            help_text="Where runs execute. E2B uses the server's E2B key, or this project's "
            "secret E2B_API_KEY when it has one; E2B limits must fit its template's size.",
        )
        for name, unit in (
            ("cpu_cores", "cores"),
            ("memory_mb", "MB"),
            ("disk_mb", "MB"),
            ("timeout_seconds", "s"),
            ("max_turns", "turns"),
            ("log_limit_mb", "MB"),
        ):
            self.fields[name].help_text = _limit_help(name, unit)
            self.fields[name].widget.attrs.update(
                min=limits.minimum(name), max=limits.maximum(name)
            )
        self.fields["cpu_cores"].widget.attrs["step"] = "0.1"
        instance = self.instance
        if instance.pk:
            self.fields["delete_secrets"].choices = [
                (s.name, s.name) for s in instance.secrets.all()
            ]
            if not self.is_bound:
                self.initial["env_text"] = validation.env_to_text(instance.env)
                self.initial["capture_text"] = "\n".join(instance.capture_patterns)
        else:
            del self.fields["delete_secrets"]

    def clean_env_text(self) -> dict[str, str]:
        return validation.parse_env_text(self.cleaned_data.get("env_text") or "")

    def clean_capture_text(self) -> list[str]:
        patterns = validation.parse_lines(self.cleaned_data.get("capture_text") or "")
        validation.validate_capture_patterns(patterns)
        return patterns

    def clean_secrets_text(self) -> dict[str, str]:
        secrets: dict[str, str] = {}
        for number, raw in enumerate((self.cleaned_data.get("secrets_text") or "").splitlines()):
            if not raw.strip():
                continue
            name, sep, value = raw.partition("=")
            name = name.strip()
            if not sep or not value:
                raise ValidationError(f"Line {number + 1}: expected NAME=value.")
            validation.validate_secret_name(name)
            secrets[name] = value
        return secrets

    def clean_image(self) -> str:
        image = (self.cleaned_data.get("image") or "").strip()
        validation.validate_image(image)
        return image

    def service_values(self) -> dict[str, Any]:
        values = {name: self.cleaned_data[name] for name in self.Meta.fields}
        values["team"] = self.cleaned_data.get("team")
        values["env"] = self.cleaned_data["env_text"]
        values["capture_patterns"] = self.cleaned_data["capture_text"]
        return values

    def _post_clean(self) -> None:
        # Model validation happens in the service (with the secrets it knows about).
        pass

    def add_service_errors(self, error: ValidationError) -> None:
        if hasattr(error, "error_dict"):
            for field, messages in error.message_dict.items():
                name = FORM_FIELD_FOR.get(field, field)
                self.add_error(name if name in self.fields else None, messages)
        else:
            self.add_error(None, error)
