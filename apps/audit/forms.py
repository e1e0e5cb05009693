"""The audit log's filters, shared by the page, its CSV export and the API."""

from __future__ import annotations

from django import forms

from .selectors import AuditFilters
from .services import Action


class AuditFilterForm(forms.Form):
    action = forms.ChoiceField(
        required=False, choices=[("", "Any action")] + [(a, a) for a in Action.ALL]
    )
    actor = forms.CharField(required=False, max_length=150)
    target_type = forms.CharField(required=False, max_length=50)
    target_id = forms.CharField(required=False, max_length=64)
    team = forms.IntegerField(required=False, min_value=1)
    date_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def filters(self) -> AuditFilters:
        data = self.cleaned_data
        return AuditFilters(
            action=data.get("action") or "",
            actor=(data.get("actor") or "").strip(),
            target_type=(data.get("target_type") or "").strip(),
            target_id=(data.get("target_id") or "").strip(),
            team=data.get("team"),
            date_from=data.get("date_from"),
            date_to=data.get("date_to"),
        )
