from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from .forms import AuditFilterForm
from .selectors import AuditFilters, csv_lines, list_audit_events, require_audit_reader


def _filters(request: HttpRequest) -> AuditFilters | None:
    require_audit_reader(request.user)
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


@login_required
@require_GET
def audit_export(request: HttpRequest) -> HttpResponse:
    filters = _filters(request)
    if filters is None:
        return HttpResponseBadRequest("Invalid filters")
    response = StreamingHttpResponse(
        csv_lines(filters=filters), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = 'attachment; filename="audit-log.csv"'
    return response
