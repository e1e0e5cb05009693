from __future__ import annotations

import datetime as dt

from django import forms
from django.utils import timezone

from .scopes import SCOPES

EXPIRY_CHOICES = [
    ("30", "30 days"),
    ("7", "7 days"),
    ("90", "90 days"),
    ("365", "1 year"),
    ("never", "Never"),
]


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text="What uses it, e.g. “CI on main”.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    scopes = forms.MultipleChoiceField(
        choices=[(scope, f"{scope} — {text}") for scope, text in SCOPES.items()],
        widget=forms.CheckboxSelectMultiple,
        initial=["runs:read", "runs:write"],
        help_text="Write implies read. The token can never do more than you can.",
    )
    expiry = forms.ChoiceField(choices=EXPIRY_CHOICES, initial="30", label="Expires in")

    def expires_at(self) -> dt.datetime | None:
        value = self.cleaned_data["expiry"]
        if value == "never":
            return None
        return timezone.now() + dt.timedelta(days=int(value))
