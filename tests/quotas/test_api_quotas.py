"""/api/v1/tenants/{tenant}/quota/: members read it, only staff change it, bad values leave it unchanged."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from controlplane.contracts.gpu_map import gpu_map_error
from quotas.models import Quota
from tenants.models import AuditEvent, Tenant

pytestmark = pytest.mark.django_db

Api = Callable[[User | None], APIClient]
URL = "/api/v1/tenants/acme/quota/"


def test_viewers_read_the_quota(api: Api, vera: User, acme: Tenant) -> None:
    body = api(vera).get(URL).json()
    quota = Quota.objects.for_tenant(acme).get()
    assert body["tenant"] == "acme"
    assert body["max_deployments"] == quota.max_deployments
    assert body["requests_per_minute"] == quota.requests_per_minute


def test_staff_change_the_quota_and_it_is_audited(api: Api, staff: User, acme: Tenant) -> None:
    response = api(staff).patch(URL, {"gpus": {"nvidia-h100": 4}, "requests_per_minute": None}, format="json")
    assert response.status_code == 200, response.content
    quota = Quota.objects.for_tenant(acme).get()
    assert (quota.gpus, quota.requests_per_minute) == ({"nvidia-h100": 4}, None)
    event = AuditEvent.objects.for_tenant(acme).get(action="quota.update")
    assert event.actor == staff
    assert event.changes["gpus"] == [{}, {"nvidia-h100": 4}]


def test_owners_cannot_change_their_quota(api: Api, alice: User, acme: Tenant) -> None:
    response = api(alice).patch(URL, {"max_deployments": 1000}, format="json")
    assert response.status_code == 403
    assert Quota.objects.for_tenant(acme).get().max_deployments != 1000


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"gpus": {"tpu-v5": 1}}, "gpus"),
        ({"gpus": {"nvidia-h100": -1}}, "gpus"),
        ({"gpus": [1]}, "gpus"),
        ({"max_replicas": -1}, "max_replicas"),
        ({"tokens_per_minute": "lots"}, "tokens_per_minute"),
        ({"cpu_cores": 0}, "cpu_cores"),
    ],
)
def test_it_refuses_bad_quota_values(
    api: Api, staff: User, acme: Tenant, payload: dict[str, object], field: str
) -> None:
    before = Quota.objects.for_tenant(acme).values().get()
    response = api(staff).patch(URL, payload, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert Quota.objects.for_tenant(acme).values().get() == before


def test_another_tenants_quota_is_404(api: Api, charlie: User, acme: Tenant) -> None:
    assert api(charlie).get(URL).status_code == 404


def test_the_body_lists_every_quota_field_in_the_models_order(api: Api, vera: User, acme: Tenant) -> None:
    assert list(api(vera).get(URL).json()) == [
        "tenant",
        "gpus",
        "max_replicas",
        "max_deployments",
        "requests_per_minute",
        "tokens_per_minute",
        "max_concurrent_requests",
        "monthly_token_budget",
        "batch_requests_per_minute",
        "batch_tokens_per_minute",
        "cpu_cores",
        "memory_gib",
        "max_open_batches",
        "max_batch_queued_lines",
        "updated_at",
    ]


@pytest.mark.parametrize("gpus", [{"tpu-v5": 1}, {"nvidia-h100": -1}, {"nvidia-h100": True}, [1]])
def test_it_refuses_a_bad_gpu_map_in_the_words_of_the_shared_gpu_map_check(
    api: Api, staff: User, acme: Tenant, gpus: object
) -> None:
    response = api(staff).patch(URL, {"gpus": gpus}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["gpus"] == [gpu_map_error(gpus, settings.FRONTDOOR_GPU_TYPES)]
