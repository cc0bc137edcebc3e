"""The OpenAPI schema describes what the API really answers: nullable where the data is, objects where it sends one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from tenants.models import ApiKey, Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return dict(SchemaGenerator().get_schema(request=None, public=True))


def test_the_usage_report_is_one_object_in_the_schema_and_on_the_wire(
    schema: dict[str, Any], api: Callable[[User | None], APIClient], vera: User
) -> None:
    described = schema["paths"]["/api/v1/tenants/{tenant}/usage/"]["get"]["responses"]["200"]
    assert described["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/UsageReport"}
    body = api(vera).get("/api/v1/tenants/acme/usage/").json()
    assert isinstance(body, dict) and set(schema["components"]["schemas"]["UsageReport"]["properties"]) <= set(body)


def test_a_key_without_a_creator_and_an_event_without_an_actor_are_nullable(
    schema: dict[str, Any],
    api: Callable[[User | None], APIClient],
    adam: User,
    acme: Tenant,
    issue_key: Callable[..., tuple[ApiKey, str]],
) -> None:
    components = schema["components"]["schemas"]
    assert components["ApiKey"]["properties"]["created_by"].get("nullable") is True
    assert components["AuditEvent"]["properties"]["actor"].get("nullable") is True
    key, _ = issue_key(acme, ["inference"])  # issued by the platform: no creator
    listed = api(adam).get("/api/v1/tenants/acme/keys/").json()["results"]
    assert any(item["key_id"] == key.key_id and item["created_by"] is None for item in listed)
