"""The reconciler against the fake Kubernetes API server: create, no-op, patch, prune, recover, delete, report."""

# pytest fixtures are imported by name, which ruff reads as redefinitions:
# ruff: noqa: F811
from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from deployments.backends.base import TransientBackendError
from deployments.backends.kubernetes import KubernetesBackend
from deployments.models import ModelDeployment, Revision
from deployments.reconcile import engine as reconcile
from quotas.models import Quota
from tests.fakekube.cluster import gpu_nodes
from tests.fakekube.fixtures import fakekube, kube_backend  # noqa: F401
from tests.fakekube.server import FakeKubeServer
from tests.fakekube.store import KINDS

pytestmark = pytest.mark.django_db
NS = "fd-acme"
CHAT = "frontdoor.dev/deployment=chat"


def make_deployment(tenant: Any, **fields: Any) -> ModelDeployment:
    values = {
        "name": "chat",
        "runtime": "vllm",
        "model": "m",
        "gpu_type": "nvidia-h100",
        "gpu_count": 1,
        "min_replicas": 1,
        "max_replicas": 4,
        "desired_replicas": 2,
        **fields,
    }
    deployment = ModelDeployment.unscoped_objects.create(tenant=tenant, **values)
    Revision.unscoped_objects.create(deployment=deployment, number=1, spec=deployment.revision_spec(), weight=100)
    return deployment


def add_revision(deployment: ModelDeployment, number: int, weight: int, **spec: Any) -> Revision:
    return Revision.unscoped_objects.create(
        deployment=deployment, number=number, spec={**deployment.revision_spec(), **spec}, weight=weight
    )


def revisions_of(deployment: ModelDeployment) -> list[Revision]:
    return list(Revision.unscoped_objects.filter(deployment=deployment).order_by("number"))


def names(fake: FakeKubeServer, plural: str, selector: str = CHAT) -> list[str]:
    with fake.store.lock:
        return sorted(o["metadata"]["name"] for o in fake.store.list(plural, NS, selector))


def condition(deployment: ModelDeployment, type_: str) -> dict[str, Any]:
    deployment.refresh_from_db()
    return next(c for c in deployment.conditions if c["type"] == type_)


def converge(deployment: ModelDeployment, backend: KubernetesBackend, attempts: int = 10) -> reconcile.ReconcileResult:
    """Run passes the way the task would retry them, until one gets through."""
    for _ in range(attempts):
        try:
            return reconcile.reconcile_deployment(deployment.pk, backend)
        except TransientBackendError:
            continue
    raise AssertionError("did not converge")


def test_it_creates_every_object_on_the_first_pass(
    acme: Any, fakekube: FakeKubeServer, kube_backend: KubernetesBackend
) -> None:
    deployment = make_deployment(acme, autoscaler_class="hpa")
    result = reconcile.reconcile_deployment(deployment.pk, kube_backend)
    assert result.outcome == "converged"
    assert names(fakekube, "namespaces", "app.kubernetes.io/managed-by=frontdoor") == []  # cluster-scoped: not in NS
    assert ("namespaces", "", NS) in fakekube.store.objects
    assert names(fakekube, "resourcequotas", "") == ["frontdoor-quota"]
    assert names(fakekube, "networkpolicies", "") == ["frontdoor-egress", "frontdoor-gateway-only"]
    assert names(fakekube, "serviceaccounts", "") == ["frontdoor-model"]
    assert names(fakekube, "persistentvolumeclaims", "") == ["frontdoor-model-cache"]
    for plural in ("deployments", "services", "poddisruptionbudgets", "horizontalpodautoscalers"):
        assert names(fakekube, plural) == ["chat-r1"], plural
    assert names(fakekube, "httproutes") == []
    deployment.refresh_from_db()
    assert deployment.status == ModelDeployment.Status.READY
    assert deployment.observed_generation == deployment.generation
    assert deployment.ready_replicas == 2
    assert condition(deployment, "Ready")["status"] == "True"
    revision = Revision.unscoped_objects.get(deployment=deployment, number=1)
    # The gateway balances across the ready pods themselves, not the Service's ClusterIP.
    with fakekube.store.lock:
        pods = fakekube.store.list("pods", NS, "frontdoor.dev/revision=r1")
    assert revision.endpoints == sorted(f"http://{p['status']['podIP']}:8000" for p in pods)
    assert len(revision.endpoints) == 2


def test_it_writes_nothing_on_a_second_pass(
    acme: Any, fakekube: FakeKubeServer, kube_backend: KubernetesBackend
) -> None:
    deployment = make_deployment(acme)
    reconcile.reconcile_deployment(deployment.pk, kube_backend)
    fakekube.store.reset_stats()
    with CaptureQueriesContext(connection) as queries:
        result = reconcile.reconcile_deployment(deployment.pk, kube_backend)
    assert fakekube.store.stats.writes == 0
    assert fakekube.store.stats.reads > 0
    assert result.db_writes == 0
    writes = [q["sql"] for q in queries if q["sql"].split()[0].upper() in {"INSERT", "UPDATE", "DELETE"}]
    assert writes == []


def test_it_patches_only_what_changed(acme: Any, fakekube: FakeKubeServer, kube_backend: KubernetesBackend) -> None:
    deployment = make_deployment(acme)
    reconcile.reconcile_deployment(deployment.pk, kube_backend)
    fakekube.store.reset_stats()
    ModelDeployment.unscoped_objects.filter(pk=deployment.pk).update(desired_replicas=3, generation=2)
    reconcile.reconcile_deployment(deployment.pk, kube_backend)
    assert fakekube.store.stats.write_log == [("PATCH", "deployments", NS, "chat-r1")]
    assert fakekube.store.get("deployments", NS, "chat-r1")["spec"]["replicas"] == 3
    deployment.refresh_from_db()
    assert deployment.observed_generation == 2 and deployment.ready_replicas == 3


def test_it_keeps_the_stable_revision_until_the_canary_is_ready_then_prunes_it(
    acme: Any, fakekube: FakeKubeServer, kube_backend: KubernetesBackend
) -> None:
    deployment = make_deployment(acme)
    reconcile.reconcile_deployment(deployment.pk, kube_backend)
    fakekube.store.auto_ready = False
    Revision.unscoped_objects.filter(deployment=deployment, number=1).update(weight=0)
    add_revision(deployment, 2, 100, model="m2")
    reconcile.reconcile_deployment(deployment.pk, kube_backend)
    assert names(fakekube, "deployments") == ["chat-r1", "chat-r2"]
    assert fakekube.store.get("deployments", NS, "chat-r1")["spec"]["replicas"] == 2  # not scaled down
    assert condition(deployment, "Progressing")["status"] == "True"
    fakekube.store.auto_ready = True  # the cluster moves again: the canary's pods start and become ready
    fakekube.store.controller.settle()
    reconcile.reconcile_deployment(deployment.pk, kube_backend)
    for plural in ("deployments", "services", "poddisruptionbudgets"):
        assert names(fakekube, plural) == ["chat-r2"], plural
    assert Revision.unscoped_objects.get(deployment=deployment, number=1).endpoints == []
    assert condition(deployment, "Ready")["status"] == "True"


def test_it_prunes_the_httproute_an_earlier_version_made_and_leaves_other_routes(
    acme: Any, fakekube: FakeKubeServer, kube_backend: KubernetesBackend
) -> None:
    deployment = make_deployment(acme, desired_replicas=1)
    converge(deployment, kube_backend)
    labels = fakekube.store.get("services", NS, "chat-r1")["metadata"]["labels"]
    mine = {key: value for key, value in labels.items() if key != "frontdoor.dev/revision"}
    route: dict[str, Any] = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "spec": {}}
    fakekube.store.create("httproutes", NS, {**route, "metadata": {"name": "chat", "labels": mine}}, "v1")
    fakekube.store.create("httproutes", NS, {**route, "metadata": {"name": "theirs", "labels": {"a": "b"}}}, "v1")

    KubernetesBackend.from_environment().apply_deployment(reconcile.desired_spec(deployment, revisions_of(deployment)))

    assert sorted(name for (p, ns, name) in fakekube.store.objects if p == "httproutes") == ["theirs"]


def test_it_converges_after_a_spell_of_server_errors(
    acme: Any, fakekube: FakeKubeServer, kube_backend: KubernetesBackend
) -> None:
    deployment = make_deployment(acme)
    fakekube.store.faults.fail_next = 5
    with pytest.raises(TransientBackendError):
        reconcile.reconcile_deployment(deployment.pk, kube_backend)
    assert converge(deployment, kube_backend).outcome == "converged"
    assert names(fakekube, "deployments") == ["chat-r1"]
    fakekube.store.reset_stats()
    reconcile.reconcile_deployment(deployment.pk, kube_backend)
    assert fakekube.store.stats.writes == 0


def test_it_retries_a_conflict(acme: Any, fakekube: FakeKubeServer, kube_backend: KubernetesBackend) -> None:
    deployment = make_deployment(acme)
    reconcile.reconcile_deployment(deployment.pk, kube_backend)
    ModelDeployment.unscoped_objects.filter(pk=deployment.pk).update(desired_replicas=1)
    fakekube.store.faults.conflict_next = 1
    assert reconcile.reconcile_deployment(deployment.pk, kube_backend).outcome == "converged"
    assert fakekube.store.get("deployments", NS, "chat-r1")["spec"]["replicas"] == 1


def test_it_deletes_every_object_then_the_row(
    acme: Any, fakekube: FakeKubeServer, kube_backend: KubernetesBackend
) -> None:
    deployment = make_deployment(acme, autoscaler_class="hpa")
    reconcile.reconcile_deployment(deployment.pk, kube_backend)
    ModelDeployment.unscoped_objects.filter(pk=deployment.pk).update(desired_state="deleting")
    assert reconcile.reconcile_deployment(deployment.pk, kube_backend).outcome == "deleted"
    assert fakekube.store.count_by_label(CHAT) == 0
    assert not ModelDeployment.unscoped_objects.filter(pk=deployment.pk).exists()
    assert not Revision.unscoped_objects.filter(deployment_id=deployment.pk).exists()
    assert reconcile.reconcile_deployment(deployment.pk, kube_backend).outcome == "missing"


def test_it_updates_the_namespace_quota_when_the_quota_changes(
    acme: Any, fakekube: FakeKubeServer, kube_backend: KubernetesBackend
) -> None:
    assert reconcile.reconcile_tenant(acme.pk, kube_backend)
    Quota.unscoped_objects.filter(tenant=acme).update(gpus={"nvidia-h100": 2}, max_replicas=3, cpu_cores=16)
    assert reconcile.reconcile_tenant(acme.pk, kube_backend)
    hard = fakekube.store.get("resourcequotas", NS, "frontdoor-quota")["spec"]["hard"]
    # Twice the quota (FRONTDOOR_K8S_QUOTA_HEADROOM): room for a rollout beside what admission holds to 1x.
    assert hard["requests.nvidia.com/gpu"] == "4" and hard["pods"] == "6" and hard["requests.cpu"] == "32"


def test_it_reports_pods_waiting_for_gpus_until_they_run(
    acme: Any, alice: Any, api: Any, fakekube: FakeKubeServer, kube_backend: KubernetesBackend
) -> None:
    # Nine GPUs per replica: more than any of the fake's nodes has (8), so the scheduler cannot place the pod.
    deployment = make_deployment(acme, desired_replicas=1, gpu_count=9)
    reconcile.reconcile_deployment(deployment.pk, kube_backend)
    reconcile.reconcile_deployment(deployment.pk, kube_backend)
    shown = api(alice).get("/api/v1/tenants/acme/deployments/chat/").json()
    waiting = next(c for c in shown["conditions"] if c["type"] == "WaitingForCapacity")
    assert waiting["status"] == "True"
    assert "nodes are available" in waiting["message"] and "Insufficient nvidia.com/gpu" in waiting["message"]
    (placement,) = [n for n in gpu_nodes("nvidia-h100", 1, gpus=16)]
    fakekube.store.add_node(replace(placement, name="h100-16"))  # a bigger node joins the pool
    fakekube.store.controller.settle()
    reconcile.reconcile_deployment(deployment.pk, kube_backend)
    assert condition(deployment, "WaitingForCapacity")["status"] == "False"
    assert condition(deployment, "Ready")["status"] == "True"


def test_it_marks_a_rejected_manifest_degraded_with_the_servers_message(
    acme: Any, fakekube: FakeKubeServer, kube_backend: KubernetesBackend
) -> None:
    deployment = make_deployment(acme)
    problem = 'Deployment.apps "chat-r1" is invalid: spec.template.spec.containers[0].image: Required value'
    fakekube.store.faults.reject_names = {"chat-r1": problem}
    assert reconcile.reconcile_deployment(deployment.pk, kube_backend).outcome == "degraded"
    deployment.refresh_from_db()
    assert deployment.status == ModelDeployment.Status.DEGRADED
    degraded = condition(deployment, "Degraded")
    assert degraded["status"] == "True" and problem in degraded["message"]
    fakekube.store.faults.reject_names = {}
    assert reconcile.reconcile_deployment(deployment.pk, kube_backend).outcome == "converged"
    assert condition(deployment, "Degraded")["status"] == "False"


def test_it_never_leaves_objects_of_other_deployments_behind_or_touches_them(
    acme: Any, fakekube: FakeKubeServer, kube_backend: KubernetesBackend
) -> None:
    chat = make_deployment(acme)
    other = make_deployment(acme, name="embed")
    reconcile.reconcile_deployment(chat.pk, kube_backend)
    reconcile.reconcile_deployment(other.pk, kube_backend)
    ModelDeployment.unscoped_objects.filter(pk=chat.pk).update(desired_state="deleting")
    reconcile.reconcile_deployment(chat.pk, kube_backend)
    assert names(fakekube, "deployments", "frontdoor.dev/deployment=embed") == ["embed-r1"]
    assert sum(len(fakekube.store.list(p, NS, CHAT)) for p in KINDS) == 0
