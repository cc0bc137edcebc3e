"""Manifests: every generated object passes the real schemas, carries the ownership labels, and says what the
deployment asks for (GPUs, placement, weights, autoscaling); the preview endpoint shows the same objects."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from deployments.backends import manifests
from deployments.backends.base import DeploymentSpec, RevisionSpec, TenantSpec
from deployments.models import ModelDeployment, Revision
from tests.fakekube.validation import manifest_problem

TENANT = TenantSpec(slug="acme", gpus={"nvidia-h100": 8, "nvidia-l4": 4}, max_replicas=8, cpu_cores=64, memory_gib=512)


def revision(number: int, runtime: str = "vllm", replicas: int = 2, weight: int = 100, gpus: int = 1) -> RevisionSpec:
    spec = {
        "runtime": runtime,
        "model": "meta-llama/Llama-3.1-8B",
        "image": "",
        "args": ["--max-model-len", "8192"],
        "env": {"HF_HUB_OFFLINE": "1"},
        "gpu_type": "nvidia-h100" if gpus else "",
        "gpu_count": gpus,
    }
    return RevisionSpec(id=100 + number, number=number, spec=spec, replicas=replicas, weight=weight)


def deployment(*revisions: RevisionSpec, autoscaler: str = "kpa") -> DeploymentSpec:
    return DeploymentSpec(
        id=7,
        tenant=TENANT,
        name="chat",
        autoscaler_class=autoscaler,
        min_replicas=1,
        max_replicas=4,
        target_concurrency=8,
        revisions=revisions,
    )


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


@pytest.mark.parametrize("runtime", ["vllm", "tgi", "triton", "builtin"])
@pytest.mark.parametrize("autoscaler", ["kpa", "hpa"])
def test_it_generates_objects_that_pass_the_strict_schemas(runtime: str, autoscaler: str) -> None:
    kube = manifests.KubeSettings()
    spec = deployment(revision(1, runtime, weight=80), revision(2, runtime, weight=20, gpus=0), autoscaler=autoscaler)
    objects = manifests.tenant_objects(TENANT, kube) + manifests.deployment_objects(spec, kube, {"chat-r1": "uid-1"})
    problems = {f"{o['kind']}/{o['metadata']['name']}": manifest_problem(o) for o in objects}
    assert {name: p for name, p in problems.items() if p} == {}
    assert len(by_kind(objects, "HorizontalPodAutoscaler")) == (2 if autoscaler == "hpa" else 0)


def test_it_labels_and_names_every_object_deterministically() -> None:
    kube = manifests.KubeSettings()
    spec = deployment(revision(1, weight=90), revision(3, weight=10))
    objects = manifests.deployment_objects(spec, kube)
    assert objects == manifests.deployment_objects(spec, kube)
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels[manifests.MANAGED_BY] == "frontdoor"
        assert labels[manifests.TENANT_LABEL] == "acme"
        assert labels[manifests.DEPLOYMENT_LABEL] == "chat"
        assert obj["metadata"]["namespace"] == "fd-acme"
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert ("Deployment", "chat-r1") in names and ("Service", "chat-r3") in names
    # No HTTPRoute: the gateway is the only way to the replicas, so nothing may route around it.
    assert {kind for kind, _name in names} == {"Deployment", "Service", "PodDisruptionBudget"}
    revision_labels = {o["metadata"]["labels"].get(manifests.REVISION_LABEL) for o in objects}
    assert revision_labels == {"r1", "r3"}


def test_it_requests_gpus_and_places_pods_on_the_configured_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    placement = {"nvidia-h100": {"cloud.example.com/accelerator": "h100-sxm"}}
    monkeypatch.setenv("FRONTDOOR_K8S_GPU_NODE_SELECTORS", json.dumps(placement))
    kube = manifests.KubeSettings.from_env()
    obj = by_kind(manifests.deployment_objects(deployment(revision(1, gpus=2)), kube), "Deployment")[0]
    pod = obj["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert pod["nodeSelector"] == {"cloud.example.com/accelerator": "h100-sxm"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert container["args"][:2] == ["--model", "meta-llama/Llama-3.1-8B"]
    assert "--tensor-parallel-size" in container["args"] and container["args"][-2:] == ["--max-model-len", "8192"]
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] >= 1200
    assert obj["spec"]["replicas"] == 2


def test_it_places_cpu_only_revisions_without_gpu_selectors() -> None:
    obj = by_kind(
        manifests.deployment_objects(deployment(revision(1, "builtin", gpus=0)), manifests.KubeSettings()), "Deployment"
    )[0]
    pod = obj["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]


def test_it_lets_only_the_gateway_reach_model_pods(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRONTDOOR_K8S_GATEWAY_NAMESPACE", "edge")
    monkeypatch.setenv("FRONTDOOR_K8S_QUOTA_HEADROOM", "1.5")
    objects = {o["metadata"]["name"]: o for o in manifests.tenant_objects(TENANT, manifests.KubeSettings.from_env())}
    quota, policy = objects["frontdoor-quota"], objects["frontdoor-gateway-only"]
    peer = policy["spec"]["ingress"][0]["from"][0]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "edge"}
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "frontdoor-gateway"}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    # The tenant's quota (12 GPUs, 8 replicas, 64 cores, 512 GiB) with room for rollouts, rounded up.
    assert quota["spec"]["hard"] == {
        "requests.nvidia.com/gpu": "18",
        "pods": "12",
        "requests.cpu": "96",
        "requests.memory": "768Gi",
    }


def test_it_owns_dependents_by_the_revision_deployment_and_leaves_replicas_to_the_hpa() -> None:
    objects = manifests.deployment_objects(
        deployment(revision(1), autoscaler="hpa"), manifests.KubeSettings(), {"chat-r1": "u1"}
    )
    dependents = [o for o in objects if o["kind"] in {"Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}]
    assert len(dependents) == 3
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == "u1" for o in dependents)
    assert "replicas" not in by_kind(objects, "Deployment")[0]["spec"]


def test_it_creates_nothing_for_external_revisions() -> None:
    external = RevisionSpec(id=1, number=1, spec={"runtime": "external", "model": "x"}, replicas=0, weight=100)
    assert manifests.deployment_objects(deployment(external), manifests.KubeSettings()) == []


def _make(tenant: Any) -> ModelDeployment:
    d = ModelDeployment.unscoped_objects.create(
        tenant=tenant, name="chat", runtime="vllm", model="m", gpu_type="nvidia-h100", gpu_count=1, max_replicas=2
    )
    Revision.unscoped_objects.create(deployment=d, number=1, spec=d.revision_spec(), weight=100)
    return d


def test_it_previews_the_manifests_as_yaml_for_a_viewer(vera: Any, acme: Any, api: Any) -> None:
    _make(acme)
    response = api(vera).get("/api/v1/tenants/acme/deployments/chat/manifests")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/yaml")
    documents = list(yaml.safe_load_all(response.content))
    kinds = [d["kind"] for d in documents]
    assert kinds[:3] == ["Namespace", "ResourceQuota", "NetworkPolicy"]
    assert {"Deployment", "Service", "PodDisruptionBudget"} <= set(kinds)
    assert "HTTPRoute" not in kinds
    assert all(manifest_problem(d) is None for d in documents)


def test_it_hides_another_tenants_manifests(charlie: Any, acme: Any, api: Any) -> None:
    _make(acme)
    assert api(charlie).get("/api/v1/tenants/acme/deployments/chat/manifests").status_code == 404
    assert api(None).get("/api/v1/tenants/acme/deployments/chat/manifests").status_code in {401, 403}
