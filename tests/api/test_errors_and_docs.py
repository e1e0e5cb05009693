"""Every error has one JSON shape; the schema and the docs are served without a CDN."""

from __future__ import annotations

import pytest
from django.contrib.staticfiles import finders

from tests.api.conftest import ApiClient, assert_error

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "path", ["/api/v1/nope", "/api/v1/runs/1/nope", "/api/v1/projects/", "/api/v1/v2/runs"]
)
def test_unknown_paths_under_the_prefix_are_json_404s(as_alice, path):
    assert_error(as_alice.get(path), 404, "not_found")
    assert_error(ApiClient().get(path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/api/v1/runs/1", "GET"),
        ("PUT", "/api/v1/projects/1", "GET, PATCH"),
        ("GET", "/api/v1/runs/1/cancel", "POST"),
    ],
)
def test_wrong_methods_are_json_405s_with_allow(as_alice, method, path, allowed):
    response = as_alice.request(method, path, {})
    assert_error(response, 405, "method_not_allowed")
    assert sorted(response["Allow"].split(", ")) == sorted(allowed.split(", "))


def test_validation_errors_name_the_field_and_list_all(as_alice, project):
    error = assert_error(
        as_alice.post("/api/v1/projects", {"memory_mb": "big", "cpu_cores": []}), 400
    )
    fields = {detail["field"] for detail in error["details"]}
    assert error["code"] == "validation_error" and {"name", "memory_mb", "cpu_cores"} <= fields
    assert error["field"] in fields and error["message"].startswith(error["field"])


@pytest.mark.parametrize(
    ("params", "field"),
    [({"after": "x"}, "after"), ({"limit": "many"}, "limit")],
)
def test_bad_query_parameters_name_the_parameter(as_alice, alice, project, params, field):
    from apps.runs.services import start_run

    run = start_run(project=project, user=alice, task="echo", overrides={})
    assert_error(as_alice.get(f"/api/v1/runs/{run.pk}/events", **params), 400, field=field)


@pytest.mark.parametrize("name", ["a\\u0000b", "\\ud800"])
def test_text_no_database_can_store_is_a_400(as_alice, name):
    response = as_alice.client.post(
        "/api/v1/projects",
        '{"name": "' + name + '"}',
        content_type="application/json",
        headers=as_alice.headers(),
    )
    assert_error(response, 400, "validation_error", field="name")


def test_a_non_object_body_is_a_400(as_alice):
    assert_error(as_alice.post("/api/v1/projects", [1, 2]), 400, "validation_error")
    assert_error(as_alice.post("/api/v1/runs", "text"), 400, "validation_error")


def test_the_openapi_schema_documents_every_operation_and_error(client):
    schema = client.get("/api/v1/openapi.json").json()
    assert schema["info"]["version"] == "1"
    assert schema["components"]["securitySchemes"]["TokenAuth"] == {
        "type": "http",
        "scheme": "bearer",
    }
    operations = [
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method in item
        if method in {"get", "post", "patch", "put", "delete"}
    ]
    assert len(operations) == 54  # 29 + teams (13), limits and usage (10), audit (2)
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            assert {"401", "403", "429"} <= set(operation["responses"]), (method, path)
            assert operation["security"] == [{"TokenAuth": []}]
    error = schema["components"]["schemas"]["ErrorOut"]
    assert error["required"] == ["error"]
    events = schema["paths"]["/api/v1/runs/{run_id}/events"]["get"]
    assert {p["name"] for p in events["parameters"]} == {"run_id", "after", "limit"}


def test_the_docs_page_loads_swagger_from_our_static_files(client):
    page = client.get("/api/v1/docs").content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in page and "/api/v1/openapi.json" in page
    assert "cdn" not in page.lower() and "https://" not in page
    assert finders.find("ninja/swagger-ui-bundle.js") and finders.find("ninja/swagger-ui.css")
