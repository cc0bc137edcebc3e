"""Kubernetes objects for tenants and deployments: pure functions from the backend specs to plain dicts.

Nothing here does I/O or touches the ORM: the reconciler builds ``TenantSpec``/``DeploymentSpec`` from Postgres,
the Kubernetes backend applies what these functions return, and the preview endpoint renders the same objects
as YAML. Names are deterministic (``<deployment>-r<number>`` per revision, ``<deployment>`` for the HTTPRoute) and
every object carries the ownership labels below, which is how the backend finds and prunes them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from controlplane.contracts.env import env_str
from deployments.backends.base import DeploymentSpec, RevisionSpec, TenantSpec

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "frontdoor"
TENANT_LABEL = "frontdoor.dev/tenant"
DEPLOYMENT_LABEL = "frontdoor.dev/deployment"
DEPLOYMENT_ID_LABEL = "frontdoor.dev/deployment-id"
REVISION_LABEL = "frontdoor.dev/revision"
GPU_RESOURCE = "nvidia.com/gpu"
MODEL_PORT = 8000

# Node placement per GPU type; FRONTDOOR_K8S_GPU_NODE_SELECTORS (JSON) replaces entries of the same key.
# Labels are those of NVIDIA's GPU feature discovery; the taint is the one GPU node pools usually carry.
_GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
_GPU_PRODUCTS = {
    "nvidia-h100": "NVIDIA-H100-80GB-HBM3",
    "nvidia-h200": "NVIDIA-H200",
    "nvidia-a100": "NVIDIA-A100-SXM4-80GB",
    "nvidia-l4": "NVIDIA-L4",
}
DEFAULT_GPU_PLACEMENT: dict[str, dict[str, Any]] = {
    gpu_type: {"nodeSelector": {"nvidia.com/gpu.product": product}, "tolerations": [_GPU_TOLERATION]}
    for gpu_type, product in _GPU_PRODUCTS.items()
}


@dataclass(frozen=True)
class RuntimeProfile:
    """How a runtime is started in a container and how Kubernetes tells it is ready."""

    image: str
    health_path: str
    command: tuple[str, ...] = ()


RUNTIMES: dict[str, RuntimeProfile] = {
    "vllm": RuntimeProfile("vllm/vllm-openai:v0.6.3", "/health"),
    "tgi": RuntimeProfile("ghcr.io/huggingface/text-generation-inference:2.4.0", "/health"),
    "triton": RuntimeProfile("nvcr.io/nvidia/tritonserver:24.10-py3", "/v2/health/ready", ("tritonserver",)),
    "builtin": RuntimeProfile("ghcr.io/frontdoor/modelserver:0.1.0", "/health", ("python", "-m", "modelserver")),
}


@dataclass(frozen=True)
class KubeSettings:
    """Cluster-specific choices, read from the environment by ``from_env``."""

    namespace_prefix: str = "fd-"
    gateway_namespace: str = "frontdoor-gateway"
    gateway_name: str = "frontdoor"
    gateway_pod_labels: Mapping[str, str] = field(
        default_factory=lambda: {"app.kubernetes.io/name": "frontdoor-gateway"}
    )
    gpu_placement: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: dict(DEFAULT_GPU_PLACEMENT))
    builtin_image: str = RUNTIMES["builtin"].image

    @classmethod
    def from_env(cls) -> KubeSettings:
        placement: dict[str, Any] = dict(DEFAULT_GPU_PLACEMENT)
        raw = env_str("FRONTDOOR_K8S_GPU_NODE_SELECTORS").strip()
        if raw:
            try:
                overrides = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ValueError(f"FRONTDOOR_K8S_GPU_NODE_SELECTORS is not JSON: {exc}") from exc
            if not isinstance(overrides, dict):
                raise ValueError("FRONTDOOR_K8S_GPU_NODE_SELECTORS must map GPU type to placement")
            for gpu_type, value in overrides.items():
                # Accept the short form {"gpu": {"label": "value"}} as a bare node selector.
                is_full = isinstance(value, dict) and ("nodeSelector" in value or "tolerations" in value)
                placement[gpu_type] = value if is_full else {"nodeSelector": value, "tolerations": [_GPU_TOLERATION]}
        labels_raw = env_str("FRONTDOOR_K8S_GATEWAY_POD_LABELS").strip()
        default = cls()
        return cls(
            # An empty prefix is a real choice (namespaces named after the tenant alone), so it is not a default.
            namespace_prefix=os.environ.get("FRONTDOOR_K8S_NAMESPACE_PREFIX", default.namespace_prefix),
            gateway_namespace=env_str("FRONTDOOR_K8S_GATEWAY_NAMESPACE", default.gateway_namespace),
            gateway_name=env_str("FRONTDOOR_K8S_GATEWAY_NAME", default.gateway_name),
            gateway_pod_labels=json.loads(labels_raw) if labels_raw else default.gateway_pod_labels,
            gpu_placement=placement,
            builtin_image=env_str("FRONTDOOR_K8S_BUILTIN_IMAGE", default.builtin_image),
        )


def namespace_name(tenant_slug: str, kube: KubeSettings) -> str:
    return f"{kube.namespace_prefix}{tenant_slug}"


def revision_object_name(deployment_name: str, number: int) -> str:
    return f"{deployment_name}-r{number}"


def service_url(deployment_name: str, number: int, namespace: str) -> str:
    """The cluster DNS URL of a revision's Service: what the gateway calls."""
    return f"http://{revision_object_name(deployment_name, number)}.{namespace}.svc.cluster.local:{MODEL_PORT}"


def tenant_labels(tenant_slug: str) -> dict[str, str]:
    return {MANAGED_BY: MANAGER, TENANT_LABEL: tenant_slug}


def deployment_labels(spec: DeploymentSpec) -> dict[str, str]:
    return {**tenant_labels(spec.tenant.slug), DEPLOYMENT_LABEL: spec.name, DEPLOYMENT_ID_LABEL: str(spec.id)}


def revision_labels(spec: DeploymentSpec, revision: RevisionSpec) -> dict[str, str]:
    return {**deployment_labels(spec), REVISION_LABEL: f"r{revision.number}"}


def _meta(name: str, namespace: str | None, labels: Mapping[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(labels)}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


# ---------------------------------------------------------------- tenant objects


def tenant_objects(tenant: TenantSpec, kube: KubeSettings) -> list[dict[str, Any]]:
    """The tenant's Namespace, ResourceQuota and NetworkPolicy (only the gateway reaches model pods)."""
    ns = namespace_name(tenant.slug, kube)
    labels = tenant_labels(tenant.slug)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(ns, None, labels)}
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": _meta("frontdoor-quota", ns, labels),
        "spec": {
            "hard": {
                # Kubernetes has one extended resource for every NVIDIA GPU, so the per-type quota is summed here
                # and enforced per type by the control plane's admission checks.
                f"requests.{GPU_RESOURCE}": str(sum(tenant.gpus.values())),
                "pods": str(tenant.max_replicas),
                "requests.cpu": str(tenant.cpu_cores),
                "requests.memory": f"{tenant.memory_gib}Gi",
            }
        },
    }
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta("frontdoor-gateway-only", ns, labels),
        "spec": {
            "podSelector": {"matchLabels": {MANAGED_BY: MANAGER}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": kube.gateway_namespace}
                            },
                            "podSelector": {"matchLabels": dict(kube.gateway_pod_labels)},
                        }
                    ],
                    "ports": [{"protocol": "TCP", "port": MODEL_PORT}],
                }
            ],
        },
    }
    return [namespace, quota, policy]


# ---------------------------------------------------------------- revision objects


def _container_args(runtime: str, spec: Mapping[str, Any]) -> list[str]:
    model = str(spec.get("model", ""))
    gpus = int(spec.get("gpu_count") or 0)
    extra = [str(arg) for arg in spec.get("args") or []]
    port = str(MODEL_PORT)
    if runtime == "vllm":
        base = ["--model", model, "--host", "0.0.0.0", "--port", port]
        return [*base, *(["--tensor-parallel-size", str(gpus)] if gpus > 1 else []), *extra]
    if runtime == "tgi":
        base = ["--model-id", model, "--hostname", "0.0.0.0", "--port", port]
        return [*base, *(["--num-shard", str(gpus)] if gpus > 1 else []), *extra]
    if runtime == "triton":
        return [f"--model-repository={model}", f"--http-port={port}", "--allow-grpc=false", *extra]
    return ["--model", model, "--host", "0.0.0.0", "--port", port, *extra]


def _resources(spec: Mapping[str, Any]) -> dict[str, Any]:
    gpus = int(spec.get("gpu_count") or 0) if spec.get("gpu_type") else 0
    # CPU/memory requests are required by the namespace ResourceQuota; sized per GPU for model servers.
    cpu = str(max(1, 4 * gpus))
    memory = f"{max(2, 24 * gpus)}Gi"
    requests: dict[str, str] = {"cpu": cpu, "memory": memory}
    limits: dict[str, str] = {"memory": memory}
    if gpus:
        requests[GPU_RESOURCE] = str(gpus)
        limits[GPU_RESOURCE] = str(gpus)
    return {"requests": requests, "limits": limits}


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "failureThreshold": failures}


def revision_deployment(
    spec: DeploymentSpec, revision: RevisionSpec, namespace: str, kube: KubeSettings
) -> dict[str, Any]:
    """The apps/v1 Deployment running one revision's replicas."""
    rspec = revision.spec
    runtime = str(rspec.get("runtime", "builtin"))
    profile = RUNTIMES.get(runtime, RUNTIMES["builtin"])
    default_image = kube.builtin_image if runtime == "builtin" else profile.image
    labels = revision_labels(spec, revision)
    container: dict[str, Any] = {
        "name": "model",
        "image": str(rspec.get("image") or default_image),
        "args": _container_args(runtime, rspec),
        "ports": [{"name": "http", "containerPort": MODEL_PORT, "protocol": "TCP"}],
        "env": [{"name": str(k), "value": str(v)} for k, v in sorted((rspec.get("env") or {}).items())],
        "resources": _resources(rspec),
        # Loading weights can take many minutes: the startup probe allows 30 min before liveness-style restarts,
        # readiness then gates traffic.
        "startupProbe": _probe(profile.health_path, 10, 180),
        "readinessProbe": _probe(profile.health_path, 5, 3),
    }
    if profile.command:
        container["command"] = list(profile.command)
    pod_spec: dict[str, Any] = {"containers": [container], "terminationGracePeriodSeconds": 60}
    gpu_type = str(rspec.get("gpu_type") or "")
    if gpu_type and int(rspec.get("gpu_count") or 0) > 0:
        placement = kube.gpu_placement.get(gpu_type, {})
        if placement.get("nodeSelector"):
            pod_spec["nodeSelector"] = dict(placement["nodeSelector"])
        if placement.get("tolerations"):
            pod_spec["tolerations"] = [dict(t) for t in placement["tolerations"]]
    selector = {DEPLOYMENT_LABEL: spec.name, REVISION_LABEL: f"r{revision.number}"}
    body: dict[str, Any] = {
        "selector": {"matchLabels": selector},
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        # Surge only: a replica is replaced after its successor is ready (GPU capacity permitting).
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "progressDeadlineSeconds": 3600,
    }
    if not uses_hpa(spec, revision):
        body["replicas"] = revision.replicas
    name = revision_object_name(spec.name, revision.number)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(name, namespace, labels), "spec": body}


def uses_hpa(spec: DeploymentSpec, revision: RevisionSpec) -> bool:
    """HPA scales a revision only when the class is ``hpa`` and the revision runs (HPA cannot hold 0 replicas)."""
    return spec.autoscaler_class == "hpa" and revision.replicas > 0


def _owned(obj: dict[str, Any], owner_name: str, owner_uid: str | None) -> dict[str, Any]:
    if owner_uid:
        obj["metadata"]["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": owner_name, "uid": owner_uid, "controller": True}
        ]
    return obj


def revision_dependents(
    spec: DeploymentSpec, revision: RevisionSpec, namespace: str, owner_uid: str | None = None
) -> list[dict[str, Any]]:
    """Service, PodDisruptionBudget and (class ``hpa``) HorizontalPodAutoscaler, owned by the revision Deployment."""
    name = revision_object_name(spec.name, revision.number)
    labels = revision_labels(spec, revision)
    selector = {DEPLOYMENT_LABEL: spec.name, REVISION_LABEL: f"r{revision.number}"}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, namespace, labels),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": MODEL_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(name, namespace, labels),
        # maxUnavailable (not minAvailable) so a single-replica revision never blocks a node drain forever.
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
    }
    objects = [_owned(service, name, owner_uid), _owned(pdb, name, owner_uid)]
    if uses_hpa(spec, revision):
        hpa = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": _meta(name, namespace, labels),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicas": max(1, min(revision.replicas, spec.max_replicas)),
                "maxReplicas": max(1, spec.max_replicas),
                "metrics": [
                    {
                        "type": "Pods",
                        "pods": {
                            "metric": {"name": "frontdoor_inflight_requests"},
                            "target": {"type": "AverageValue", "averageValue": str(spec.target_concurrency)},
                        },
                    }
                ],
            },
        }
        objects.append(_owned(hpa, name, owner_uid))
    return objects


def http_route(spec: DeploymentSpec, namespace: str, kube: KubeSettings) -> dict[str, Any] | None:
    """The Gateway API HTTPRoute splitting traffic by revision weight; None when no revision runs on Kubernetes."""
    revisions = [r for r in spec.revisions if r.runs_replicas]
    if not revisions:
        return None
    model_header = f"{spec.tenant.slug}.{spec.name}"
    backends = [
        {"name": revision_object_name(spec.name, r.number), "port": MODEL_PORT, "weight": r.weight}
        for r in sorted(revisions, key=lambda r: r.number)[-16:]  # the CRD allows 16 backendRefs per rule
    ]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": _meta(spec.name, namespace, deployment_labels(spec)),
        "spec": {
            "parentRefs": [
                {
                    "group": "gateway.networking.k8s.io",
                    "kind": "Gateway",
                    "name": kube.gateway_name,
                    "namespace": kube.gateway_namespace,
                }
            ],
            "rules": [
                {
                    "matches": [
                        {
                            "path": {"type": "PathPrefix", "value": "/"},
                            "headers": [{"type": "Exact", "name": "x-frontdoor-model", "value": model_header}],
                        }
                    ],
                    "backendRefs": backends,
                }
            ],
        },
    }


def deployment_objects(
    spec: DeploymentSpec, kube: KubeSettings, owner_uids: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every object of a deployment, revision Deployments first (their uids own the dependents)."""
    namespace = namespace_name(spec.tenant.slug, kube)
    uids = owner_uids or {}
    objects: list[dict[str, Any]] = []
    for revision in spec.revisions:
        if not revision.runs_replicas:
            continue
        objects.append(revision_deployment(spec, revision, namespace, kube))
    for revision in spec.revisions:
        if not revision.runs_replicas:
            continue
        name = revision_object_name(spec.name, revision.number)
        objects.extend(revision_dependents(spec, revision, namespace, uids.get(name)))
    route = http_route(spec, namespace, kube)
    if route is not None:
        objects.append(route)
    return objects


def to_yaml(objects: Iterable[Mapping[str, Any]]) -> str:
    """A multi-document YAML stream, as ``kubectl apply -f`` takes it."""
    return yaml.safe_dump_all([dict(o) for o in objects], sort_keys=False, default_flow_style=False)
