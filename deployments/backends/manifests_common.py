"""What every generated Kubernetes object shares: the ownership labels, names, ports and the cluster's settings.

``KubeSettings`` holds the choices that differ between clusters (namespaces, the gateway's pods, GPU placement, the
model cache's storage, the Pod Security level, where pods may connect to, where Prometheus runs); ``from_env`` reads
them from ``FRONTDOOR_K8S_*`` and refuses values the API server or the network would refuse later.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.contracts.env import ImproperlyConfiguredEnv, env_float, env_json, env_list, env_str
from deployments.backends.base import DeploymentSpec, RevisionSpec

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "frontdoor"
TENANT_LABEL = "frontdoor.dev/tenant"
DEPLOYMENT_LABEL = "frontdoor.dev/deployment"
DEPLOYMENT_ID_LABEL = "frontdoor.dev/deployment-id"
REVISION_LABEL = "frontdoor.dev/revision"
GPU_RESOURCE = "nvidia.com/gpu"
MODEL_PORT = 8000
# Triton serves its Prometheus metrics on a port of their own; the other runtimes on MODEL_PORT.
TRITON_METRICS_PORT = 8002

# Tenant-wide objects the pods use.
MODEL_SERVICE_ACCOUNT = "frontdoor-model"
MODEL_CACHE_CLAIM = "frontdoor-model-cache"
# The tenant's secrets: values by secret name (``secretKeyRef``), and its registry logins (``imagePullSecrets``).
SECRETS_NAME = "frontdoor-secrets"
REGISTRIES_NAME = "frontdoor-registries"
# On the pod template: the versions of the secrets the pods read, so that a rotated value rolls them.
SECRETS_ANNOTATION = "frontdoor.dev/secret-versions"

POD_SECURITY_LEVELS = ("privileged", "baseline", "restricted")
CACHE_ACCESS_MODES = ("ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod", "ReadOnlyMany")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")

# Node placement per GPU type; FRONTDOOR_K8S_GPU_NODE_SELECTORS (JSON) replaces entries of the same key.
# Labels are those of NVIDIA's GPU feature discovery; the taint is the one GPU node pools usually carry.
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
_GPU_PRODUCTS = {
    "nvidia-h100": "NVIDIA-H100-80GB-HBM3",
    "nvidia-h200": "NVIDIA-H200",
    "nvidia-a100": "NVIDIA-A100-SXM4-80GB",
    "nvidia-l4": "NVIDIA-L4",
}
DEFAULT_GPU_PLACEMENT: dict[str, dict[str, Any]] = {
    gpu_type: {"nodeSelector": {"nvidia.com/gpu.product": product}, "tolerations": [GPU_TOLERATION]}
    for gpu_type, product in _GPU_PRODUCTS.items()
}
DEFAULT_BUILTIN_IMAGE = "ghcr.io/frontdoor/modelserver:0.1.0"


@dataclass(frozen=True)
class KubeSettings:
    """Cluster-specific choices, read from the environment by ``from_env``."""

    namespace_prefix: str = "fd-"
    gateway_namespace: str = "frontdoor-gateway"
    gateway_pod_labels: Mapping[str, str] = field(
        default_factory=lambda: {"app.kubernetes.io/name": "frontdoor-gateway"}
    )
    gpu_placement: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: dict(DEFAULT_GPU_PLACEMENT))
    builtin_image: str = DEFAULT_BUILTIN_IMAGE
    model_cache_class: str = ""  # empty: the cluster's default storage class
    model_cache_size: str = "1Ti"
    model_cache_access: str = "ReadWriteMany"
    pod_security: str = "baseline"
    egress_cidrs: tuple[str, ...] = ()
    prometheus_namespace: str = "monitoring"
    prometheus_pod_labels: Mapping[str, str] = field(default_factory=lambda: {"app.kubernetes.io/name": "prometheus"})
    # The namespace's ResourceQuota is the tenant's quota times this: admission keeps what the tenant holds within
    # the quota itself, and a rollout runs a deployment's new revision beside the old one until it is ready (and
    # a rotated secret surges one pod per Deployment), which a quota of exactly 1x would block forever.
    quota_headroom: float = 2.0

    @classmethod
    def from_env(cls) -> KubeSettings:
        default = cls()
        return cls(
            # An empty prefix is a real choice (namespaces named after the tenant alone), so it is not a default.
            namespace_prefix=os.environ.get("FRONTDOOR_K8S_NAMESPACE_PREFIX", default.namespace_prefix),
            gateway_namespace=env_str("FRONTDOOR_K8S_GATEWAY_NAMESPACE", default.gateway_namespace),
            gateway_pod_labels=_env_labels("FRONTDOOR_K8S_GATEWAY_POD_LABELS", default.gateway_pod_labels),
            gpu_placement=_env_gpu_placement(),
            builtin_image=env_str("FRONTDOOR_K8S_BUILTIN_IMAGE", default.builtin_image),
            model_cache_class=env_str("FRONTDOOR_K8S_MODEL_CACHE_CLASS"),
            model_cache_size=_env_choice(
                "FRONTDOOR_K8S_MODEL_CACHE_SIZE", default.model_cache_size, _QUANTITY.match, "a quantity like 1Ti"
            ),
            model_cache_access=_env_choice(
                "FRONTDOOR_K8S_MODEL_CACHE_ACCESS",
                default.model_cache_access,
                CACHE_ACCESS_MODES.__contains__,
                f"one of {', '.join(CACHE_ACCESS_MODES)}",
            ),
            pod_security=_env_choice(
                "FRONTDOOR_K8S_POD_SECURITY",
                default.pod_security,
                POD_SECURITY_LEVELS.__contains__,
                f"one of {', '.join(POD_SECURITY_LEVELS)}",
            ),
            egress_cidrs=tuple(_cidr(value) for value in env_list("FRONTDOOR_K8S_EGRESS_CIDRS")),
            prometheus_namespace=env_str("FRONTDOOR_K8S_PROMETHEUS_NAMESPACE", default.prometheus_namespace),
            prometheus_pod_labels=_env_labels("FRONTDOOR_K8S_PROMETHEUS_POD_LABELS", default.prometheus_pod_labels),
            quota_headroom=_env_headroom(default.quota_headroom),
        )


def _env_headroom(default: float) -> float:
    value = env_float("FRONTDOOR_K8S_QUOTA_HEADROOM", default)
    if not 1.0 <= value <= 10.0:
        raise ImproperlyConfiguredEnv(f"FRONTDOOR_K8S_QUOTA_HEADROOM={value} must be between 1 and 10")
    return value


def _env_choice(name: str, default: str, accepts: Any, expected: str) -> str:
    value = env_str(name, default).strip()
    if not accepts(value):
        raise ImproperlyConfiguredEnv(f"{name}={value!r} must be {expected}")
    return value


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError as exc:
        raise ImproperlyConfiguredEnv(f"FRONTDOOR_K8S_EGRESS_CIDRS: {value!r} is not a CIDR: {exc}") from exc


def _env_labels(name: str, default: Mapping[str, str]) -> Mapping[str, str]:
    labels = env_json(name, default)
    if labels is default:
        return default
    if not isinstance(labels, dict) or not labels or not all(isinstance(v, str) for v in labels.values()):
        raise ImproperlyConfiguredEnv(f"{name} must be a non-empty JSON object of label values")
    return {str(k): v for k, v in labels.items()}


def _env_gpu_placement() -> dict[str, Any]:
    placement: dict[str, Any] = dict(DEFAULT_GPU_PLACEMENT)
    overrides = env_json("FRONTDOOR_K8S_GPU_NODE_SELECTORS", {})
    if not isinstance(overrides, dict):
        raise ImproperlyConfiguredEnv("FRONTDOOR_K8S_GPU_NODE_SELECTORS must map GPU type to placement")
    for gpu_type, value in overrides.items():
        # Accept the short form {"gpu": {"label": "value"}} as a bare node selector.
        is_full = isinstance(value, dict) and ("nodeSelector" in value or "tolerations" in value)
        placement[gpu_type] = value if is_full else {"nodeSelector": value, "tolerations": [GPU_TOLERATION]}
    return placement


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


def object_meta(name: str, namespace: str | None, labels: Mapping[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(labels)}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta
