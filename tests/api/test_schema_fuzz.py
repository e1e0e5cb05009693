"""Property-based fuzz of the API against its own OpenAPI schema (schemathesis, in-process).

Every operation gets generated requests, valid and invalid, with a real token of a user who owns
a project and a run (so some generated ids hit real objects). No request may produce a 500, and
every response must match what the schema documents (status codes, content types, bodies).
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from apps.runs import services as run_services
from apps.teams import services as team_services
from apps.teams.models import Membership
from tests.api.conftest import make_token
from tests.projects.factories import make_project, make_user

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", get_wsgi_application())


@pytest.fixture
def in_test_transaction():
    """Like Django's test client: the WSGI handler must not close the test's connection."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def fuzz_token(db, settings, in_test_transaction):
    settings.API_RATE_LIMIT_REQUESTS = 1_000_000
    # An instance admin (so the limits and audit operations run, not only their 403) who owns
    # a team with a member and a pending invitation, a project and runs.
    owner = make_user(is_staff=True)
    team = team_services.create_team(user=owner, name="Fuzz team")
    Membership.objects.create(team=team, user=make_user(), role="member")
    team_services.invite(
        team=team, actor=owner, actor_role="owner", who=make_user().username, role="viewer"
    )
    project = make_project(owner, name="Fuzzed", team=team)
    for _ in range(2):
        run_services.start_run(project=project, user=owner, task="echo", overrides={})
    return make_token(owner)


# Administration (team management, limits, audit): thin operations over the pages' own forms
# and services, fuzzed with fewer examples each to keep the suite's runtime in budget.
ADMIN_TAGS = ["teams", "limits", "audit"]
SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}
CHECKS = [
    # Schema-valid is not always acceptable: limits are set by admins at run time
    # (memory_mb=0 is a well-typed 400), names are unique, env may only reference
    # existing secrets. The schema states types and shapes, the 400 names the field.
    positive_data_acceptance,
    # pydantic's lax parsing takes some values the schema's strict reading does not
    # (date_to=0 is 1970-01-01, "1" is true); they are parsed, never crash.
    negative_data_rejection,
]


@pytest.mark.django_db
@schema.exclude(tag=ADMIN_TAGS).parametrize()
@settings(max_examples=30, **SETTINGS)
def test_the_api_conforms_to_its_schema(case, fuzz_token):
    case.call_and_validate(
        headers={"Authorization": f"Bearer {fuzz_token}"}, excluded_checks=CHECKS
    )


@pytest.mark.django_db
@schema.include(tag=ADMIN_TAGS).parametrize()
@settings(max_examples=10, **SETTINGS)
def test_the_administration_operations_conform_to_the_schema(case, fuzz_token):
    case.call_and_validate(
        headers={"Authorization": f"Bearer {fuzz_token}"}, excluded_checks=CHECKS
    )
