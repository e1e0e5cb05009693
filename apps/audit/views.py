from __future__ import annotations

import csv
import json
from collections.abc import Iterator

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from .selectors import AuditFilters, list_audit_events
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


def _filters(request: HttpRequest) -> AuditFilters | None:
    if not request.user.is_staff:
        raise PermissionDenied("Only instance admins read the audit log.")
    form = AuditFilterForm(request.GET)
    return form.filters() if form.is_valid() else None


@login_required
@require_GET
def audit_list(request: HttpRequest) -> HttpResponse:
    filters = _filters(request)
    if filters is None:
        return HttpResponseBadRequest("Invalid filters")
    page = Paginator(list_audit_events(filters=filters), 100).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "audit/list.html",
        {"form": AuditFilterForm(request.GET), "page": page, "query": query.urlencode()},
    )


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv_safe(value: str) -> str:
    # Cells starting with = + - @ run as formulas in spreadsheets: quote them.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


@login_required
@require_GET
def audit_export(request: HttpRequest) -> HttpResponse:
    filters = _filters(request)
    if filters is None:
        return HttpResponseBadRequest("Invalid filters")
    writer = csv.writer(_Echo())
    header = [
        "at",
        "actor",
        "action",
        "target_type",
        "target_id",
        "target",
        "team_id",
        "ip",
        "user_agent",
        "before",
        "after",
    ]

    def rows() -> Iterator[str]:
        yield writer.writerow(header)
        for event in list_audit_events(filters=filters).iterator(chunk_size=500):
            yield writer.writerow(
                [
                    event.at.isoformat(),
                    _csv_safe(event.actor_name),
                    event.action,
                    event.target_type,
                    _csv_safe(event.target_id),
                    _csv_safe(event.target_repr),
                    event.team_id or "",
                    event.ip or "",
                    _csv_safe(event.user_agent),
                    _csv_safe(json.dumps(event.before, sort_keys=True))
                    if event.before is not None
                    else "",
                    _csv_safe(json.dumps(event.after, sort_keys=True))
                    if event.after is not None
                    else "",
                ]
            )

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="audit-log.csv"'
    return response
