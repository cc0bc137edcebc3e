"""How long the gateway holds a request for a deployment starting from zero, as the snapshot publishes it: the
deployment's own ``cold_start_timeout_s``, else its startup window on Kubernetes, else the gateway's default."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from controlplane.snapshot.publisher import build_snapshot
from deployments import services
from gateway.snapshot_index import parse_snapshot
from quotas.models import Quota
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


def published(tenant: Tenant, **fields: Any) -> dict[str, Any]:
    data = {"name": "chat", "runtime": "vllm", "model": "m", "min_replicas": 0, "max_replicas": 1, **fields}
    services.create_deployment(tenant, data, actor=None)
    doc: dict[str, Any] = build_snapshot()["deployments"]["acme/chat"]
    return doc


def test_a_deployment_that_names_its_cold_start_timeout_gets_it(acme: Tenant) -> None:
    doc = published(acme, cold_start_timeout_s=240)
    assert doc["cold_hold_s"] == 240


@override_settings(FRONTDOOR_BACKEND="kubernetes")
def test_on_kubernetes_the_hold_is_the_startup_window_of_the_pod(acme: Tenant) -> None:
    Quota.objects.for_tenant(acme).update(gpus={"nvidia-h100": 8}, max_replicas=4)
    doc = published(acme, gpu_type="nvidia-h100", gpu_count=4, startup_timeout_s=900)

    assert doc["cold_hold_s"] == 900
    snapshot = parse_snapshot(build_snapshot())  # type: ignore[arg-type]
    deployment = snapshot.deployments["acme", "chat"]
    assert deployment.hold_s(60.0) == 900.0


def test_on_the_local_backend_the_gateways_own_hold_applies(acme: Tenant) -> None:
    doc = published(acme, runtime="builtin")
    assert "cold_hold_s" not in doc
    deployment = parse_snapshot(build_snapshot()).deployments["acme", "chat"]  # type: ignore[arg-type]
    assert deployment.hold_s(60.0) == 60.0


def test_bad_cold_start_and_grace_values_are_field_errors(acme: Tenant, alice: Any, api: Any) -> None:
    client = api(alice)
    base = {"name": "chat", "runtime": "builtin", "model": "m"}
    for field, value in (("cold_start_timeout_s", 0), ("cold_start_timeout_s", 3601), ("scale_to_zero_grace_s", -1)):
        response = client.post("/api/v1/tenants/acme/deployments/", {**base, field: value}, format="json")
        assert response.status_code == 400, (field, value)
        assert field in response.json()["error"]["fields"]
