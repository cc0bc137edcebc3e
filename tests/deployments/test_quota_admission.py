"""Quota admission: deployments, replicas and GPUs per type, under the quota row lock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.test import override_settings
from rest_framework.test import APIClient

from controlplane.access import Principal
from controlplane.domain_errors import QuotaExceeded
from deployments import services
from deployments.models import ModelDeployment, Revision
from quotas.admission import admit_deployment
from quotas.models import Quota
from tenants.models import Role, Tenant

pytestmark = pytest.mark.django_db

BASE = "/api/v1/tenants/acme/deployments/"


def principal_of(user: User) -> Principal:
    return Principal(user_id=user.pk, api_key=None, role=Role.OWNER, is_staff=False)


def set_quota(tenant: Tenant, **fields: Any) -> None:
    Quota.objects.for_tenant(tenant).update(**fields)


def make(tenant: Tenant, user: User, name: str, **fields: Any) -> ModelDeployment:
    data = {"name": name, "runtime": "vllm", "model": "m", **fields}
    return services.create_deployment(tenant, data, actor=principal_of(user))


def test_it_refuses_more_gpus_than_the_quota_names_the_ask_and_what_is_left(
    api: Callable[..., APIClient], bob: User, acme: Tenant, deployment_payload: Callable[..., Any]
) -> None:
    make(acme, bob, "small", gpu_type="nvidia-h100", gpu_count=1, max_replicas=2)  # holds 2 of 8

    response = api(bob).post(
        BASE, deployment_payload(name="big", gpu_count=2, min_replicas=1, max_replicas=4), format="json"
    )

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert error["message"] == "quota exceeded: nvidia-h100 GPUs: asked 8 (2 per replica × 4 replicas), 6 of 8 left"
    assert not ModelDeployment.objects.for_tenant(acme).filter(name="big").exists()
    assert Revision.objects.for_tenant(acme).count() == 1


def test_it_admits_exactly_up_to_the_gpu_quota(acme: Tenant, bob: User) -> None:
    make(acme, bob, "a", gpu_type="nvidia-h100", gpu_count=2, max_replicas=2)
    make(acme, bob, "b", gpu_type="nvidia-h100", gpu_count=4, max_replicas=1)

    with pytest.raises(QuotaExceeded, match="0 of 8 left"):
        make(acme, bob, "c", gpu_type="nvidia-h100", gpu_count=1, max_replicas=1)


def test_gpu_types_are_counted_separately(acme: Tenant, bob: User) -> None:
    make(acme, bob, "h", gpu_type="nvidia-h100", gpu_count=8, max_replicas=1)

    made = make(acme, bob, "l", gpu_type="nvidia-l4", gpu_count=1, max_replicas=4)

    assert made.pk is not None


def test_a_gpu_type_missing_from_the_quota_allows_none(acme: Tenant, bob: User) -> None:
    with pytest.raises(QuotaExceeded, match=r"nvidia-a100 GPUs: asked 1 .* 0 of 0 left"):
        make(acme, bob, "a", gpu_type="nvidia-a100", gpu_count=1)


def test_it_refuses_more_replicas_than_the_quota(acme: Tenant, bob: User) -> None:
    make(acme, bob, "a", max_replicas=5)

    with pytest.raises(QuotaExceeded) as refused:
        make(acme, bob, "b", max_replicas=4)

    assert refused.value.message == "quota exceeded: replicas: asked 4, 3 of 8 left"


def test_it_refuses_more_deployments_than_the_quota(acme: Tenant, bob: User) -> None:
    set_quota(acme, max_deployments=2)
    make(acme, bob, "a")
    make(acme, bob, "b")

    with pytest.raises(QuotaExceeded) as refused:
        make(acme, bob, "c")

    assert refused.value.message == "quota exceeded: deployments: asked 1, 0 of 2 left"


def test_deployments_being_deleted_do_not_count(acme: Tenant, bob: User) -> None:
    set_quota(acme, max_deployments=1)
    old = make(acme, bob, "old", gpu_type="nvidia-h100", gpu_count=8)
    services.delete_deployment(old, actor=principal_of(bob))

    new = make(acme, bob, "new", gpu_type="nvidia-h100", gpu_count=8)

    assert new.pk is not None


def test_scale_within_quota_passes_and_beyond_is_refused(
    api: Callable[..., APIClient], bob: User, acme: Tenant
) -> None:
    make(acme, bob, "chat", gpu_type="nvidia-h100", gpu_count=2, max_replicas=1)
    client = api(bob)

    within = client.post(f"{BASE}chat/scale/", {"max_replicas": 4}, format="json")
    beyond = client.post(f"{BASE}chat/scale/", {"max_replicas": 5}, format="json")

    assert within.status_code == 200, within.json()
    assert beyond.status_code == 422
    assert beyond.json()["error"]["message"] == (
        "quota exceeded: nvidia-h100 GPUs: asked 10 (2 per replica × 5 replicas), 8 of 8 left"
    )
    assert ModelDeployment.objects.for_tenant(acme).get(name="chat").max_replicas == 4


def test_an_update_that_asks_more_gpus_is_admitted_against_the_quota(
    api: Callable[..., APIClient], bob: User, acme: Tenant
) -> None:
    make(acme, bob, "chat", gpu_type="nvidia-h100", gpu_count=2, max_replicas=2)

    response = api(bob).patch(f"{BASE}chat/", {"gpu_count": 5}, format="json")

    assert response.status_code == 422
    assert "asked 10 (5 per replica × 2 replicas), 8 of 8 left" in response.json()["error"]["message"]
    chat = ModelDeployment.objects.for_tenant(acme).get(name="chat")
    assert chat.gpu_count == 2
    assert chat.revisions.count() == 1


def test_a_tenant_over_a_lowered_quota_can_still_scale_down(
    api: Callable[..., APIClient], bob: User, acme: Tenant
) -> None:
    make(acme, bob, "chat", gpu_type="nvidia-h100", gpu_count=2, max_replicas=4)
    set_quota(acme, gpus={"nvidia-h100": 2}, max_replicas=1)

    response = api(bob).post(f"{BASE}chat/scale/", {"max_replicas": 2}, format="json")

    assert response.status_code == 200, response.json()


@pytest.mark.django_db(transaction=True)
def test_admission_must_run_inside_a_transaction(acme: Tenant) -> None:
    with pytest.raises(RuntimeError, match=r"transaction\.atomic"):
        admit_deployment(acme, gpu_type="", gpu_count=0, max_replicas=1)


def test_a_tenant_without_a_quota_row_gets_the_defaults(db: None, bob: User) -> None:
    lonely = Tenant.objects.create(slug="lonely", name="Lonely")

    with transaction.atomic():
        quota = admit_deployment(lonely, gpu_type="", gpu_count=0, max_replicas=1)
        with pytest.raises(QuotaExceeded, match="nvidia-h100 GPUs"):
            admit_deployment(lonely, gpu_type="nvidia-h100", gpu_count=1, max_replicas=1)

    assert quota.pk is None
    assert quota.max_deployments == Quota._meta.get_field("max_deployments").default


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("attempt", range(3))
def test_two_simultaneous_creates_cannot_together_exceed_the_quota(acme: Tenant, bob: User, attempt: int) -> None:
    """Each create fits alone (8 of 8 H100s); together they would need 16. Exactly one may succeed."""
    barrier = threading.Barrier(2, timeout=10)
    outcomes: dict[str, str] = {}

    def create(name: str) -> None:
        try:
            barrier.wait()
            make(acme, bob, name, gpu_type="nvidia-h100", gpu_count=2, max_replicas=4)
            outcomes[name] = "created"
        except QuotaExceeded:
            outcomes[name] = "refused"
        finally:
            connection.close()

    threads = [threading.Thread(target=create, args=(name,)) for name in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(outcomes.values()) == ["created", "refused"]
    held = ModelDeployment.objects.for_tenant(acme).exclude(desired_state="deleting")
    assert sum(d.gpu_count * d.max_replicas for d in held) == 8


def test_it_admits_only_the_replicas_whose_cpu_and_memory_fit_the_namespace_quota(
    api: Callable[[User | None], APIClient], alice: User, acme: Tenant
) -> None:
    # The 70B example's pod asks 16 cores and 104 GiB per replica (vLLM's defaults for 4 GPUs).
    set_quota(acme, gpus={"nvidia-h100": 64}, max_replicas=16, max_deployments=5, cpu_cores=64, memory_gib=512)
    client = api(alice)
    llama = {"name": "llama-70b", "runtime": "vllm", "model": "m", "gpu_type": "nvidia-h100", "gpu_count": 4}

    too_many = client.post(BASE, {**llama, "max_replicas": 8}, format="json")
    fits = client.post(BASE, {**llama, "min_replicas": 1, "max_replicas": 4}, format="json")
    more_memory = client.patch(f"{BASE}llama-70b/", {"memory_gib": 200}, format="json")
    second = client.post(BASE, {**llama, "name": "second", "max_replicas": 1}, format="json")

    assert too_many.status_code == 422
    assert too_many.json()["error"]["message"] == (
        "quota exceeded: CPU: asked 128 cores (16 per replica × 8 replicas), 64 of 64 cores left"
    )
    assert fits.status_code == 201, fits.json()
    assert more_memory.status_code == 422
    assert (
        "quota exceeded: memory: asked 800 GiB (200 per replica × 4 replicas)" in more_memory.json()["error"]["message"]
    )
    assert second.status_code == 422
    assert "quota exceeded: CPU: asked 16 cores" in second.json()["error"]["message"]
    assert [d.name for d in ModelDeployment.objects.for_tenant(acme)] == ["llama-70b"]
    assert ModelDeployment.objects.for_tenant(acme).get().memory_gib is None


def test_lowering_what_a_deployment_asks_is_admitted_over_a_lowered_quota(
    api: Callable[[User | None], APIClient], alice: User, acme: Tenant
) -> None:
    set_quota(acme, max_replicas=16, cpu_cores=64, memory_gib=512)
    client = api(alice)
    assert client.post(BASE, {"name": "cpu", "runtime": "builtin", "model": "m", "max_replicas": 8}).status_code == 201
    set_quota(acme, cpu_cores=2)

    assert client.patch(f"{BASE}cpu/", {"max_replicas": 4}, format="json").status_code == 200
    assert client.patch(f"{BASE}cpu/", {"max_replicas": 5}, format="json").status_code == 422


@override_settings(FRONTDOOR_BACKEND="kubernetes", FRONTDOOR_K8S_GPUS_PER_NODE=8)
def test_on_kubernetes_a_replica_may_not_ask_more_gpus_than_a_node_has(
    api: Callable[[User | None], APIClient], alice: User, acme: Tenant
) -> None:
    set_quota(acme, gpus={"nvidia-h100": 64}, max_replicas=4, cpu_cores=512, memory_gib=4096)
    client = api(alice)
    big = {"name": "big", "runtime": "vllm", "model": "m", "gpu_type": "nvidia-h100", "gpu_count": 16}

    refused = client.post(BASE, big, format="json")
    node = client.post(BASE, {**big, "gpu_count": 8}, format="json")
    grown = client.patch(f"{BASE}big/", {"gpu_count": 9}, format="json")

    assert refused.status_code == 400
    assert "a node has 8 GPUs (FRONTDOOR_K8S_GPUS_PER_NODE)" in refused.json()["error"]["fields"]["gpu_count"][0]
    assert node.status_code == 201, node.json()
    assert grown.status_code == 400
    assert ModelDeployment.objects.for_tenant(acme).get().gpu_count == 8
