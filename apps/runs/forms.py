from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms

from apps.projects import limits
from apps.projects.models import Project

from .config import OVERRIDABLE
from .models import Run
from .selectors import SORTS, HistoryFilters


class LaunchForm(forms.Form):
    kind = forms.ChoiceField(choices=Run.Kind.choices, widget=forms.RadioSelect, label="Run")
    task = forms.CharField(
        label="Task",
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false"}),
        required=False,
        max_length=100_000,
    )
    image = forms.CharField(required=False, max_length=255)
    cpu_cores = forms.FloatField(required=False, label="CPU cores")
    memory_mb = forms.IntegerField(required=False, label="Memory (MB)")
    disk_mb = forms.IntegerField(required=False, label="Disk (MB)")
    timeout_seconds = forms.IntegerField(required=False, label="Timeout (s)")
    network_mode = forms.ChoiceField(
        required=False, choices=[("", "Project default"), *Project.NetworkMode.choices]
    )
    log_limit_mb = forms.IntegerField(required=False, label="Log limit (MB)")
    model = forms.CharField(required=False, max_length=100)
    max_turns = forms.IntegerField(required=False, label="Max turns")
    max_tokens_total = forms.IntegerField(required=False, min_value=1, label="Token budget")
    max_cost_usd = forms.DecimalField(
        required=False, min_value=0.01, decimal_places=2, label="Cost budget (USD)"
    )

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.project = project
        defaults = {
            "image": project.image_or_default,
            "cpu_cores": project.cpu_cores,
            "memory_mb": project.memory_mb,
            "disk_mb": project.disk_mb,
            "timeout_seconds": project.timeout_seconds,
            "log_limit_mb": project.log_limit_mb,
            "model": project.model,
            "max_turns": project.max_turns,
            "max_tokens_total": project.max_tokens_total or "none",
            "max_cost_usd": project.max_cost_usd or "none",
        }
        for name, default in defaults.items():
            self.fields[name].widget.attrs["placeholder"] = str(default)
        for name in limits.LIMIT_FIELDS:
            if name in self.fields:
                self.fields[name].min_value = limits.minimum(name)
                self.fields[name].max_value = limits.maximum(name)
                self.fields[name].validators = []
                self.fields[name].widget.attrs.update(
                    min=limits.minimum(name), max=limits.maximum(name)
                )
                self.fields[name].help_text = f"Up to {limits.maximum(name):g} (admin limit)."
        if not self.is_bound and "kind" not in self.initial:
            self.initial["kind"] = project.default_kind

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        for name in limits.LIMIT_FIELDS:
            value = data.get(name)
            if value is not None and not limits.minimum(name) <= value <= limits.maximum(name):
                self.add_error(
                    name,
                    f"Must be between {limits.minimum(name):g} and {limits.maximum(name):g} "
                    "(the admin's limit).",
                )
        return data

    def overrides(self) -> dict[str, Any]:
        data = self.cleaned_data
        result = {}
        for name in OVERRIDABLE:
            value = data.get(name)
            if value not in (None, ""):
                result[name] = float(value) if name == "max_cost_usd" else value
        return result

    @classmethod
    def initial_from_run(cls, run: Run) -> dict[str, Any]:
        return {"kind": run.kind, "task": run.task, **run.overrides}


class HistoryFilterForm(forms.Form):
    project = forms.TypedChoiceField(required=False, coerce=int, empty_value=None)
    status = forms.MultipleChoiceField(
        required=False, choices=Run.Status.choices, widget=forms.CheckboxSelectMultiple
    )
    user = forms.CharField(required=False, max_length=150, label="Launched by")
    date_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    min_duration = forms.FloatField(required=False, min_value=0, label="Min duration (s)")
    max_duration = forms.FloatField(required=False, min_value=0, label="Max duration (s)")
    min_cost = forms.DecimalField(required=False, min_value=0, label="Min cost ($)")
    max_cost = forms.DecimalField(required=False, min_value=0, label="Max cost ($)")
    verdict = forms.ChoiceField(
        required=False,
        choices=[
            ("", "Any verdict"),
            ("approved", "Approved"),
            ("needs_work", "Needs work"),
            ("rejected", "Rejected"),
            ("none", "No verdict"),
        ],
    )
    label = forms.CharField(required=False, max_length=40)
    reviewer = forms.CharField(required=False, max_length=150)
    has_comments = forms.ChoiceField(
        required=False,
        choices=[("", "Comments: any"), ("1", "With comments"), ("0", "Without comments")],
    )
    sort = forms.ChoiceField(required=False, choices=[(k, k) for k in SORTS])
    order = forms.ChoiceField(required=False, choices=[("desc", "desc"), ("asc", "asc")])

    def __init__(self, *args: Any, projects: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["project"].choices = [("", "All projects")] + [(p.pk, p.name) for p in projects]

    def filters(self) -> HistoryFilters:
        data = self.cleaned_data if self.is_valid() else {}
        date_from: dt.date | None = data.get("date_from")
        return HistoryFilters(
            project=data.get("project"),
            status=list(data.get("status") or []),
            user=(data.get("user") or "").strip(),
            date_from=date_from,
            date_to=data.get("date_to"),
            min_duration=data.get("min_duration"),
            max_duration=data.get("max_duration"),
            min_cost=data.get("min_cost"),
            max_cost=data.get("max_cost"),
            sort=data.get("sort") or "created",
            descending=(data.get("order") or "desc") == "desc",
            review={
                key: (data.get(key) or "").strip()
                for key in ("verdict", "label", "reviewer", "has_comments")
                if data.get(key)
            },
        )
