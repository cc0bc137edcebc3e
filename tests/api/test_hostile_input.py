"""Malformed and oversized REST input gets the documented JSON error (a 4xx) and changes nothing; never a 500."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from tenants.models import ApiKey, Tenant

pytestmark = pytest.mark.django_db

Api = Callable[[User | None], APIClient]
KEYS = "/api/v1/tenants/acme/keys/"


def _error(response: Any) -> dict[str, Any]:
    assert response["Content-Type"].startswith("application/json"), response.content[:200]
    body = response.json()["error"]
    assert set(body) == {"type", "code", "message", "fields"}
    return dict(body)


@pytest.mark.parametrize(
    "field",
    [
        "requests_per_minute",
        "tokens_per_minute",
        "max_concurrent_requests",
        "batch_requests_per_minute",
        "batch_tokens_per_minute",
    ],
)
@pytest.mark.parametrize("value", [2**31, 2**63, 10**30, 0, -1])
def test_key_limits_beyond_the_column_are_a_field_error_on_create_and_update(
    api: Api, adam: User, acme: Tenant, issue_key: Callable[..., tuple[ApiKey, str]], field: str, value: int
) -> None:
    client = api(adam)
    before = ApiKey.objects.for_tenant(acme).count()
    created = client.post(KEYS, {"name": "big", "scopes": ["inference"], field: value}, format="json")
    assert created.status_code == 400
    assert field in _error(created)["fields"]
    assert ApiKey.objects.for_tenant(acme).count() == before
    key, _ = issue_key(acme, ["inference"])
    patched = client.patch(f"{KEYS}{key.key_id}/", {field: value}, format="json")
    assert patched.status_code == 400
    assert field in _error(patched)["fields"]
    key.refresh_from_db()
    assert getattr(key, field) is None


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/tenants/ac%00me/",
        "/api/v1/tenants/acme/keys/ab%00cd/",
        "/api/v1/tenants/acme/members/bo%00b/",
        "/api/v1/tenants/acme/deployments/x%00y/",
        "/api/v1/tenants/acme/audit-events/1%00/",
    ],
)
def test_nul_bytes_in_path_segments_are_a_404(api: Api, adam: User, path: str) -> None:
    response = api(adam).get(path)
    assert response.status_code == 404
    assert _error(response)["code"] == "not_found"


@pytest.mark.parametrize("path", ["/api/v1/tenants/acme/quota/", "/api/v1/tenants/acme/settings/"])
def test_options_describes_the_route_instead_of_failing(api: Api, adam: User, path: str) -> None:
    response = api(adam).options(path)
    assert response.status_code == 200, response.content[:300]


def test_a_body_over_the_upload_limit_is_a_413_in_the_error_shape(api: Api, adam: User, acme: Tenant) -> None:
    client = api(adam)
    huge = b'{"name": "' + b"x" * (20 * 1024 * 1024) + b'"}'
    response = client.generic("POST", KEYS, huge, content_type="application/json")
    assert response.status_code == 413
    assert _error(response)["code"] == "request_too_large"
    assert not ApiKey.objects.for_tenant(acme).filter(name__startswith="xxx").exists()


def test_a_body_over_the_upload_limit_is_json_even_before_authentication(db: None) -> None:
    response = Client().generic("POST", "/api/v1/tenants/", b"x" * (20 * 1024 * 1024), content_type="application/json")
    assert response.status_code in (401, 403, 413)
    _error(response)


@pytest.mark.parametrize("depth", [65, 3000, 100_000])
@pytest.mark.parametrize("field", ["args", "env", "name"])
def test_a_body_nested_too_deeply_is_a_400_and_creates_nothing(
    api: Api, adam: User, acme: Tenant, depth: int, field: str
) -> None:
    from deployments.models import ModelDeployment

    nested = "[" * depth + "]" * depth
    body = f'{{"name": "deep", "runtime": "builtin", "model": "m", "{field}": {nested}}}'
    response = api(adam).generic("POST", "/api/v1/tenants/acme/deployments/", body, content_type="application/json")
    assert response.status_code == 400
    assert "nests deeper than 64" in _error(response)["message"]
    assert not ModelDeployment.objects.for_tenant(acme).exists()


def test_a_body_at_the_depth_bound_is_judged_on_its_content(api: Api, adam: User) -> None:
    nested = "[" * 63 + "]" * 63
    body = f'{{"name": "deep", "runtime": "builtin", "model": "m", "args": {nested}}}'
    response = api(adam).generic("POST", "/api/v1/tenants/acme/deployments/", body, content_type="application/json")
    assert response.status_code == 400
    assert "args" in _error(response)["fields"]


@pytest.mark.parametrize("path", ["/api/v1/tenants/acme/deployments//x/", "/api/v1/nothing/", "/api/v2/"])
def test_an_unknown_api_path_is_a_404_in_the_error_shape(api: Api, adam: User, path: str) -> None:
    response = api(adam).get(path)
    assert response.status_code == 404
    assert _error(response)["code"] == "not_found"


def test_a_delete_answers_202_even_when_the_reconciler_removes_the_row_at_once(
    api: Api, adam: User, acme: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deployments import services
    from deployments.models import ModelDeployment

    services.create_deployment(
        acme, {"name": "gone", "runtime": "builtin", "model": "m", "min_replicas": 0}, actor=None
    )

    def fast_reconciler(pk: int) -> None:  # the worker finished before the view answered
        ModelDeployment.unscoped_objects.filter(pk=pk).delete()

    monkeypatch.setattr(services, "enqueue_reconcile", fast_reconciler)
    response = api(adam).delete("/api/v1/tenants/acme/deployments/gone/")
    assert response.status_code == 202, response.content[:300]
    assert response.json()["desired_state"] == "deleting"
