"""Bad input to the deployments API: field-level messages in the error shape, and nothing left half-written."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from rest_framework.test import APIClient

from deployments.models import ModelDeployment, Revision
from tenants.models import Tenant
from tests.support.rows import deployment_row_counts

pytestmark = pytest.mark.django_db

BASE = "/api/v1/tenants/acme/deployments/"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": "Chat_Small"}, "name"),
        ({"name": "-chat"}, "name"),
        ({"name": "a" * 41}, "name"),
        ({"name": ""}, "name"),
        ({"runtime": "pytorch"}, "runtime"),
        ({"gpu_type": "nvidia-z9000"}, "gpu_type"),
        ({"gpu_type": "", "gpu_count": 2}, "gpu_type"),
        ({"gpu_count": -1}, "gpu_count"),
        ({"gpu_count": 17}, "gpu_count"),
        ({"min_replicas": -1}, "min_replicas"),
        ({"max_replicas": 0, "min_replicas": 0}, "max_replicas"),
        ({"min_replicas": 3, "max_replicas": 2}, "min_replicas"),
        ({"max_replicas": 1001}, "max_replicas"),
        ({"endpoints": ["http://10.0.0.1:8000"]}, "endpoints"),
        ({"runtime": "external", "gpu_type": "", "gpu_count": 0}, "endpoints"),
        ({"runtime": "external", "gpu_type": "", "gpu_count": 0, "endpoints": ["ftp://x.example"]}, "endpoints"),
        ({"runtime": "external", "gpu_type": "", "gpu_count": 0, "endpoints": ["not a url"]}, "endpoints"),
        ({"slo_error_rate": 1.5}, "slo_error_rate"),
        ({"slo_error_rate": -0.1}, "slo_error_rate"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": 3601}, "timeout_s"),
        ({"target_concurrency": 0}, "target_concurrency"),
        ({"args": "--flag"}, "args"),
        ({"env": {"BAD NAME": "x"}}, "env"),
        ({"env": ["A=1"]}, "env"),
        ({"desired_state": "deleting"}, "desired_state"),
        ({"autoscaler_class": "magic"}, "autoscaler_class"),
        ({"model": ""}, "model"),
        ({"rollout": {"canary_weight": 10}}, "rollout"),
    ],
)
def test_it_refuses_a_bad_create_with_a_field_message_and_writes_nothing(
    api: Callable[..., APIClient],
    bob: User,
    deployment_payload: Callable[..., dict[str, Any]],
    overrides: dict[str, Any],
    field: str,
) -> None:
    before = deployment_row_counts()

    response = api(bob).post(BASE, deployment_payload(**overrides), format="json")

    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    assert error["code"] == "invalid"
    assert field in error["fields"], error
    assert error["fields"][field]
    assert deployment_row_counts() == before


def test_it_refuses_a_duplicate_name_on_the_name_field(
    api: Callable[..., APIClient], bob: User, deployment_payload: Callable[..., dict[str, Any]]
) -> None:
    assert api(bob).post(BASE, deployment_payload(), format="json").status_code == 201
    before = deployment_row_counts()

    response = api(bob).post(BASE, deployment_payload(), format="json")

    assert response.status_code == 400
    assert "already exists" in response.json()["error"]["fields"]["name"][0]
    assert deployment_row_counts() == before


def test_the_same_name_is_fine_in_another_tenant(
    api: Callable[..., APIClient],
    bob: User,
    charlie: User,
    deployment_payload: Callable[..., dict[str, Any]],
) -> None:
    assert api(bob).post(BASE, deployment_payload(), format="json").status_code == 201

    response = api(charlie).post("/api/v1/tenants/globex/deployments/", deployment_payload(), format="json")

    assert response.status_code == 201


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"name": "chat", ', "application/json"),
        (b"not json at all", "application/json"),
        (b"[1, 2, 3]", "application/json"),
    ],
)
def test_it_answers_malformed_json_with_the_error_shape(
    api: Callable[..., APIClient], bob: User, body: bytes, content_type: str
) -> None:
    before = deployment_row_counts()

    response = api(bob).generic("POST", BASE, body, content_type=content_type)

    assert response.status_code == 400
    assert set(response.json()["error"]) == {"type", "code", "message", "fields"}
    assert deployment_row_counts() == before


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"max_replicas": 0}, "max_replicas"),
        ({"min_replicas": 5}, "min_replicas"),
        ({"gpu_type": "nvidia-z9000"}, "gpu_type"),
        ({"gpu_type": ""}, "gpu_type"),
        ({"endpoints": ["https://x.example"]}, "endpoints"),
        ({"rollout": {"canary_weight": 101}}, "rollout"),
        ({"slo_error_rate": 2}, "slo_error_rate"),
        ({"desired_state": "deleting"}, "desired_state"),
    ],
)
def test_it_refuses_a_bad_update_and_changes_nothing(
    api: Callable[..., APIClient],
    bob: User,
    deployment_payload: Callable[..., dict[str, Any]],
    patch: dict[str, Any],
    field: str,
) -> None:
    api(bob).post(BASE, deployment_payload(), format="json")
    before = (deployment_row_counts(), list(ModelDeployment.objects.unscoped().values()))

    response = api(bob).patch(f"{BASE}chat-small/", patch, format="json")

    assert response.status_code == 400, response.json()
    assert field in response.json()["error"]["fields"]
    assert (deployment_row_counts(), list(ModelDeployment.objects.unscoped().values())) == before


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_creates_of_one_name_leave_one_deployment(
    acme: Tenant, bob: User, deployment_payload: Callable[..., dict[str, Any]]
) -> None:
    barrier = threading.Barrier(2, timeout=10)
    statuses: list[int] = []

    def create() -> None:
        try:
            client = APIClient()
            client.force_login(bob)
            barrier.wait()
            statuses.append(client.post(BASE, deployment_payload(), format="json").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=create) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(statuses)[0] == 201
    assert sorted(statuses)[1] in {400, 409}
    assert ModelDeployment.objects.for_tenant(acme).count() == 1
    assert Revision.objects.for_tenant(acme).count() == 1
