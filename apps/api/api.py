"""The versioned REST API, mounted at /api/v1/ (schema: openapi.json, docs: docs)."""

from __future__ import annotations

from ninja import NinjaAPI, Swagger

from . import errors
from .endpoints import audit, limits, me, projects, reviews, runs, teams
from .ratelimit import TokenRateThrottle

DESCRIPTION = """\
Everything the UI offers, for scripts and CI. Authenticate with a personal API token
(Settings → API tokens): `Authorization: Bearer <token>`. A token acts as its owner, narrowed
to its scopes (`*:write` implies `*:read`).

Errors are always `{"error": {"code": "...", "message": "...", "field": ...}}`: 400 invalid
input (naming the field), 401 missing/unknown/expired/revoked token, 403 missing scope or role,
404 not found or not yours, 409 invalid state change, 429 rate limit (with Retry-After).
"""

api = NinjaAPI(
    title="sandboxweb API",
    version="1",
    description=DESCRIPTION,
    urls_namespace="api-v1",
    # Swagger UI's files come from the django-ninja package ("ninja" in INSTALLED_APPS).
    docs=Swagger(settings={"persistAuthorization": True}),
    docs_url="/docs",
    openapi_url="/openapi.json",
    throttle=[TokenRateThrottle()],
)
errors.install(api)
api.add_router("", me.router)
api.add_router("", projects.router)
api.add_router("", runs.router)
api.add_router("", reviews.router)
api.add_router("", teams.router)
api.add_router("", limits.router)
api.add_router("", audit.router)
