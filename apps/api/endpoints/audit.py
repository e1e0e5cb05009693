"""/api/v1/audit: the audit log page (instance admins), its filters (the page's own form) in
keyset pages like the run history, and its CSV export with the same columns."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import HttpRequest, StreamingHttpResponse
from ninja import Query, Router

from apps.audit.forms import AuditFilterForm
from apps.audit.selectors import (
    AuditFilters,
    audit_page,
    csv_lines,
    decode_audit_cursor,
    require_audit_reader,
)

from ..auth import token_auth
from ..schemas import AuditFiltersIn, AuditPageOut, AuditQuery
from .common import errors

router = Router(tags=["audit"])
READ = token_auth("audit:read")


def _filters(request: HttpRequest, query: AuditFiltersIn) -> AuditFilters:
    """The page's form decides (unknown actions, bad dates, ...): 400 naming the field."""
    require_audit_reader(request.user)
    fields = AuditFiltersIn.model_fields
    data = {name: getattr(query, name) for name in fields if getattr(query, name) is not None}
    form = AuditFilterForm({name: str(value) for name, value in data.items()})
    if not form.is_valid():
        raise ValidationError({f: list(e) for f, e in form.errors.items()})
    return form.filters()


def event_out(event) -> dict:
    return {
        "id": event.pk,
        "at": event.at,
        "actor": event.actor_name,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "target": event.target_repr,
        "team": event.team_id,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "before": event.before,
        "after": event.after,
    }


@router.get(
    "/audit",
    auth=READ,
    response={200: AuditPageOut, **errors(400, 401, 403, 429)},
    summary="The audit log, newest first, with the page's filters, by cursor (admins)",
)
def list_audit(request: HttpRequest, query: Query[AuditQuery]) -> dict:
    filters = _filters(request, query)
    for name in ("cursor", "before"):
        value = getattr(query, name)
        if value:
            try:
                decode_audit_cursor(value)
            except ValueError:
                raise ValidationError({name: ["Not a cursor from this listing."]}) from None
    page = audit_page(filters=filters, after=query.cursor, before=query.before, limit=query.limit)
    return {
        "items": [event_out(event) for event in page.events],
        "next_cursor": page.next_cursor,
        "prev_cursor": page.prev_cursor,
    }


@router.get(
    "/audit/export.csv",
    auth=READ,
    response=errors(400, 401, 403, 429),
    openapi_extra={
        "responses": {
            200: {
                "description": "The export",
                "content": {"text/csv": {"schema": {"type": "string"}}},
            }
        }
    },
    summary="The filtered log as CSV: the page's export, same columns (admins)",
)
def export_audit(request: HttpRequest, query: Query[AuditFiltersIn]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(
        csv_lines(filters=_filters(request, query)), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = 'attachment; filename="audit-log.csv"'
    return response
