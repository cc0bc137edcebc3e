"""The Kubernetes backend against the strict fake's pods: failures reach the API with the cluster's reason, the
gateway is given pod endpoints, and a scale-down removes only pods the gateways already stopped routing to."""

# pytest fixtures are imported by name, which ruff reads as redefinitions:
# ruff: noqa: F811
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from controlplane.contracts.drain import acks_key, encode_ack
from controlplane.contracts.snapshot import decode_section, read_sections, tenant_section
from controlplane.snapshot.publisher import publish_config
from deployments import services
from deployments.backends.kube_scaledown import DELETION_COST_ANNOTATION, LEAVING_ANNOTATION
from deployments.backends.kubernetes import KubernetesBackend
from deployments.models import ModelDeployment, Revision
from deployments.reconcile import engine as reconcile
from quotas.models import Quota
from tenants.models import Tenant
from tests.fakekube.cluster import FakeClock
from tests.fakekube.fixtures import kube_backend  # noqa: F401 - on this module's ``fakekube``
from tests.fakekube.server import FakeKubeServer
from tests.fakekube.store import Store
from tests.fakekube.validation import server_side_problem
from tests.support.network import loopback_only

pytestmark = pytest.mark.django_db
NS = "fd-acme"
BROKEN = "registry.example.com/acme/broken:1"


@pytest.fixture(autouse=True)
def nothing_leaves_loopback(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The fake's pods have addresses in 10.244.0.0/16, which the backend publishes as endpoints: nothing here may
    ever connect to one (the fake API server and Redis are on 127.0.0.1)."""
    with loopback_only(monkeypatch) as attempts:
        yield
    assert attempts == []


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_800_000_000)


@pytest.fixture
def fakekube(clock: FakeClock) -> Iterator[FakeKubeServer]:
    """The strict fake on a clock the tests move (its controllers settle after every write); ``kube_backend``
    points at it."""
    server = FakeKubeServer(store=Store(clock=clock)).start()
    server.store.validator = server_side_problem
    yield server
    server.stop()


@pytest.fixture
def acme(acme: Tenant) -> Tenant:
    Quota.objects.for_tenant(acme).update(gpus={"nvidia-h100": 8}, max_replicas=8, cpu_cores=256, memory_gib=2048)
    return acme


def make(tenant: Tenant, **fields: Any) -> ModelDeployment:
    data = {
        "name": "chat",
        "runtime": "vllm",
        "model": "m",
        "gpu_type": "nvidia-h100",
        "gpu_count": 1,
        "min_replicas": 2,
        "max_replicas": 4,
        **fields,
    }
    return services.create_deployment(tenant, data, actor=None)


def passes(
    deployment: ModelDeployment, backend: KubernetesBackend, fake: FakeKubeServer, count: int = 3, step_s: float = 60
) -> None:
    """Reconcile passes with the cluster's clock moving on between them (pods start, back-offs elapse)."""
    for _ in range(count):
        reconcile.reconcile_deployment(deployment.pk, backend)
        fake.store.clock.advance(step_s)  # type: ignore[attr-defined]  # the FakeClock of the fixture
        fake.store.controller.settle()
    reconcile.reconcile_deployment(deployment.pk, backend)


def pods(fake: FakeKubeServer) -> list[dict[str, Any]]:
    with fake.store.lock:
        return [p for p in fake.store.list("pods", NS, "frontdoor.dev/deployment=chat")]


@pytest.mark.parametrize(
    ("fault", "reason", "words"),
    [
        ("ErrImagePull", "ImagePullBackOff", "Back-off pulling image"),
        ("CrashLoopBackOff", "CrashLoopBackOff", "exit code 1"),
        ("OOMKilled", "OOMKilled", "raise memory_gib"),
        # vLLM's startup window on 1 GPU is 1800 s: the clock passes it.
        ("StartupProbeFailure", "StartupProbeFailed", "startup_timeout_s"),
    ],
)
def test_a_failing_pod_makes_the_deployment_degraded_with_the_clusters_reason_in_the_api(
    acme: Tenant,
    alice: Any,
    api: Any,
    fakekube: FakeKubeServer,
    kube_backend: KubernetesBackend,
    fault: str,
    reason: str,
    words: str,
) -> None:
    fakekube.store.controller.inject(fault, image=BROKEN)
    deployment = make(acme, image=BROKEN)

    passes(deployment, kube_backend, fakekube, count=4, step_s=600)

    shown = api(alice).get("/api/v1/tenants/acme/deployments/chat/").json()
    degraded = next(c for c in shown["conditions"] if c["type"] == "Degraded")
    assert shown["status"] == "degraded"
    assert (degraded["status"], degraded["reason"]) == ("True", reason)
    assert words in degraded["message"] and "r1: pod chat-r1-" in degraded["message"]
    events = api(alice).get("/api/v1/tenants/acme/deployments/chat/events/").json()["results"]
    assert any(e["reason"] == reason for e in events)


def test_the_fault_fixed_the_deployment_recovers(
    acme: Tenant, fakekube: FakeKubeServer, kube_backend: KubernetesBackend
) -> None:
    fakekube.store.controller.inject("CrashLoopBackOff", image=BROKEN)
    deployment = make(acme, image=BROKEN)
    passes(deployment, kube_backend, fakekube)
    deployment.refresh_from_db()
    assert deployment.status == ModelDeployment.Status.DEGRADED

    fakekube.store.controller.clear_faults()
    passes(deployment, kube_backend, fakekube, count=4)

    deployment.refresh_from_db()
    assert deployment.status == ModelDeployment.Status.READY
    assert next(c for c in deployment.conditions if c["type"] == "Degraded")["status"] == "False"


def test_pods_the_namespace_quota_refuses_are_failed_create_with_the_api_servers_words(
    acme: Tenant, alice: Any, api: Any, fakekube: FakeKubeServer, kube_backend: KubernetesBackend
) -> None:
    deployment = make(acme)  # 2 replicas of 4 cores, admitted up to 4
    passes(deployment, kube_backend, fakekube, count=1)
    # The platform lowered the quota under what may run (admission holds new asks to it, not what exists): the
    # namespace allows 8 cores (4, with the headroom of 2), and the autoscaler then asks for 4 replicas.
    Quota.objects.for_tenant(acme).update(cpu_cores=4)
    assert reconcile.reconcile_tenant(acme.pk, kube_backend)
    ModelDeployment.unscoped_objects.filter(pk=deployment.pk).update(desired_replicas=4)

    passes(deployment, kube_backend, fakekube)

    shown = api(alice).get("/api/v1/tenants/acme/deployments/chat/").json()
    degraded = next(c for c in shown["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "FailedCreate"
    assert "exceeded quota: frontdoor-quota" in degraded["message"]


def test_the_gateway_is_given_each_ready_pod_not_the_service(
    acme: Tenant, fakekube: FakeKubeServer, kube_backend: KubernetesBackend
) -> None:
    deployment = make(acme, min_replicas=3)
    passes(deployment, kube_backend, fakekube, count=1)

    revision = Revision.unscoped_objects.get(deployment=deployment, number=1)
    addresses = sorted(f"http://{p['status']['podIP']}:8000" for p in pods(fakekube))
    assert revision.endpoints == addresses
    assert len(addresses) == 3
    assert not any("svc.cluster.local" in e for e in revision.endpoints)


def ack(client: redis.Redis, prefix: str, version: int) -> None:
    client.hset(acks_key(prefix), "gw-test", encode_ack(version, time.time()))


def test_a_scale_down_removes_only_pods_the_gateways_stopped_routing_to(
    acme: Tenant, fakekube: FakeKubeServer, kube_backend: KubernetesBackend, rds: redis.Redis, redis_prefix: str
) -> None:
    deployment = make(acme, min_replicas=3)
    passes(deployment, kube_backend, fakekube, count=1)
    ack(rds, redis_prefix, publish_config())  # a gateway routes to all three

    services.scale_deployment(deployment, min_replicas=1, max_replicas=1, actor=None)
    reconcile.reconcile_deployment(deployment.pk, kube_backend)

    # Step 1: two pods are marked; the Deployment keeps three; the revision's endpoints lose the two.
    marked = {
        p["metadata"]["name"] for p in pods(fakekube) if LEAVING_ANNOTATION in p["metadata"].get("annotations", {})
    }
    assert len(marked) == 2
    assert all(
        p["metadata"]["annotations"][DELETION_COST_ANNOTATION] == "-1000"
        for p in pods(fakekube)
        if p["metadata"]["name"] in marked
    )
    assert fakekube.store.get("deployments", NS, "chat-r1")["spec"]["replicas"] == 3
    (survivor,) = [p for p in pods(fakekube) if p["metadata"]["name"] not in marked]
    revision = Revision.unscoped_objects.get(deployment=deployment, number=1)
    assert revision.endpoints == [f"http://{survivor['status']['podIP']}:8000"]

    # Step 2: the snapshot without them is published, but the gateway has not loaded it: nothing is removed.
    version = publish_config()
    reconcile.reconcile_deployment(deployment.pk, kube_backend)
    assert fakekube.store.get("deployments", NS, "chat-r1")["spec"]["replicas"] == 3

    # Step 3: once it has, the count drops and the ReplicaSet deletes exactly the marked pods.
    ack(rds, redis_prefix, version)
    reconcile.reconcile_deployment(deployment.pk, kube_backend)
    fakekube.store.controller.settle()
    assert fakekube.store.get("deployments", NS, "chat-r1")["spec"]["replicas"] == 1
    fakekube.store.clock.advance(60)  # type: ignore[attr-defined]
    fakekube.store.controller.settle()
    assert [p["metadata"]["name"] for p in pods(fakekube)] == [survivor["metadata"]["name"]]


def test_a_scale_up_during_the_drain_takes_the_leaving_pods_back(
    acme: Tenant, fakekube: FakeKubeServer, kube_backend: KubernetesBackend, rds: redis.Redis, redis_prefix: str
) -> None:
    deployment = make(acme, min_replicas=3)
    passes(deployment, kube_backend, fakekube, count=1)
    ack(rds, redis_prefix, publish_config())
    services.scale_deployment(deployment, min_replicas=2, max_replicas=2, actor=None)
    reconcile.reconcile_deployment(deployment.pk, kube_backend)
    before = {p["metadata"]["name"] for p in pods(fakekube)}

    services.scale_deployment(deployment, min_replicas=3, max_replicas=3, actor=None)
    reconcile.reconcile_deployment(deployment.pk, kube_backend)

    assert {p["metadata"]["name"] for p in pods(fakekube)} == before
    assert not any(LEAVING_ANNOTATION in p["metadata"].get("annotations", {}) for p in pods(fakekube))
    assert len(Revision.unscoped_objects.get(deployment=deployment, number=1).endpoints) == 3


def test_switching_to_class_hpa_keeps_the_running_replica_count(
    acme: Tenant, fakekube: FakeKubeServer, kube_backend: KubernetesBackend
) -> None:
    deployment = make(acme, min_replicas=3)
    passes(deployment, kube_backend, fakekube, count=1)
    assert fakekube.store.get("deployments", NS, "chat-r1")["spec"]["replicas"] == 3

    services.update_deployment(deployment, {"autoscaler_class": "hpa"}, actor=None)
    passes(deployment, kube_backend, fakekube, count=2)

    applied = fakekube.store.get("deployments", NS, "chat-r1")
    assert applied["spec"]["replicas"] == 3  # not reset to 1 when our apply stopped carrying it
    hpa = fakekube.store.get("horizontalpodautoscalers", NS, "chat-r1")
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "vllm_requests_inflight"
    assert len(Revision.unscoped_objects.get(deployment=deployment, number=1).endpoints) == 3


def test_a_deployment_admitted_at_the_full_quota_runs_every_replica_and_rolls_out(
    acme: Tenant, fakekube: FakeKubeServer, kube_backend: KubernetesBackend
) -> None:
    # Admission holds 4 replicas of 4 GPUs to the 16-GPU quota, CPU and memory included; the namespace's quota has
    # the headroom a rollout needs to run the new revision beside the old one.
    Quota.objects.for_tenant(acme).update(gpus={"nvidia-h100": 16}, max_replicas=4, cpu_cores=64, memory_gib=416)
    deployment = make(acme, gpu_count=4, min_replicas=4)
    passes(deployment, kube_backend, fakekube, count=1)
    assert len(Revision.unscoped_objects.get(deployment=deployment, number=1).endpoints) == 4

    services.update_deployment(deployment, {"model": "m2"}, actor=None)
    passes(deployment, kube_backend, fakekube, count=4)

    deployment.refresh_from_db()
    assert deployment.status == ModelDeployment.Status.READY, deployment.conditions
    routed = Revision.unscoped_objects.get(deployment=deployment, number=2)
    assert len(routed.endpoints) == 4
    assert not any(c["type"] == "Degraded" and c["status"] == "True" for c in deployment.conditions)


def test_a_replica_of_a_whole_node_schedules_and_one_gpu_more_is_refused_at_the_api(
    acme: Tenant, alice: Any, api: Any, fakekube: FakeKubeServer, kube_backend: KubernetesBackend, settings: Any
) -> None:
    settings.FRONTDOOR_BACKEND = "kubernetes"
    Quota.objects.for_tenant(acme).update(gpus={"nvidia-h100": 16}, max_replicas=2, cpu_cores=64, memory_gib=512)
    body = {"name": "chat", "runtime": "vllm", "model": "m", "gpu_type": "nvidia-h100", "gpu_count": 9}

    refused = api(alice).post("/api/v1/tenants/acme/deployments/", body, format="json")
    made = api(alice).post("/api/v1/tenants/acme/deployments/", {**body, "gpu_count": 8}, format="json")

    assert refused.status_code == 400 and "FRONTDOOR_K8S_GPUS_PER_NODE" in str(refused.json())
    assert made.status_code == 201, made.json()
    deployment = ModelDeployment.objects.for_tenant(acme).get()
    passes(deployment, kube_backend, fakekube, count=1)
    assert len(Revision.unscoped_objects.get(deployment=deployment, number=1).endpoints) == 1


def test_the_console_shows_the_failure_on_the_deployments_page(
    acme: Tenant, alice: Any, client: Any, fakekube: FakeKubeServer, kube_backend: KubernetesBackend
) -> None:
    fakekube.store.controller.inject("ErrImagePull", image=BROKEN)
    deployment = make(acme, image=BROKEN)
    passes(deployment, kube_backend, fakekube)
    client.force_login(alice)

    page = client.get("/t/acme/deployments/chat/").content.decode()

    assert "Degraded" in page and "ImagePullBackOff" in page
    assert "Back-off pulling image" in page


def test_a_deployment_scaled_to_zero_on_kubernetes_is_held_for_its_pods_startup_window(
    acme: Tenant,
    fakekube: FakeKubeServer,
    kube_backend: KubernetesBackend,
    rds: redis.Redis,
    redis_prefix: str,
    settings: Any,
) -> None:
    settings.FRONTDOOR_BACKEND = "kubernetes"
    deployment = make(acme, min_replicas=0, startup_timeout_s=1200)
    ModelDeployment.unscoped_objects.filter(pk=deployment.pk).update(desired_replicas=0)
    passes(deployment, kube_backend, fakekube, count=1)
    assert fakekube.store.get("deployments", NS, "chat-r1")["spec"]["replicas"] == 0

    publish_config()

    (raw,) = read_sections(rds, redis_prefix, [tenant_section(acme.pk)]).values()
    published = decode_section(raw)["deployments"]["acme/chat"]
    assert published["cold_hold_s"] == 1200  # the pod's startup window, not the gateway's 60 s
    assert published["revisions"][0]["endpoints"] == []
