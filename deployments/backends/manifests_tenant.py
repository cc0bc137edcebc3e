"""A tenant's shared Kubernetes objects: its namespace and what every model pod in it relies on.

Namespace (with Pod Security admission labels), ResourceQuota, the ingress NetworkPolicy (the gateway, and
Prometheus on the metrics ports), the egress NetworkPolicy (DNS and the operator's model-download CIDRs), the
ServiceAccount the pods run as (which carries the tenant's registry logins as ``imagePullSecrets``), the model cache
PersistentVolumeClaim the pods mount at ``/models``, and the two Secrets holding the tenant's secrets: one value per
secret name, read by ``secretKeyRef``, and one ``.dockerconfigjson`` with every registry login. Both are always
applied, empty when the tenant has none, so that a deleted secret leaves them too.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from deployments.backends.base import TenantSpec
from deployments.backends.manifests_common import (
    GPU_RESOURCE,
    MANAGED_BY,
    MANAGER,
    MODEL_CACHE_CLAIM,
    MODEL_PORT,
    MODEL_SERVICE_ACCOUNT,
    REGISTRIES_NAME,
    SECRETS_NAME,
    TRITON_METRICS_PORT,
    KubeSettings,
    namespace_name,
    object_meta,
    tenant_labels,
)

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
INGRESS_POLICY = "frontdoor-gateway-only"
EGRESS_POLICY = "frontdoor-egress"


def pod_security_labels(kube: KubeSettings) -> dict[str, str]:
    """Admission enforces the configured level; warnings and audit entries name whatever falls short of
    ``restricted`` (vLLM and TGI pods, which run as root), so an operator sees what tightening would break."""
    return {
        "pod-security.kubernetes.io/enforce": kube.pod_security,
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/audit": "restricted",
    }


def _namespace(tenant: TenantSpec, kube: KubeSettings) -> dict[str, Any]:
    labels = {**tenant_labels(tenant.slug), **pod_security_labels(kube)}
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": object_meta(namespace_name(tenant.slug, kube), None, labels),
    }


def _quota(tenant: TenantSpec, ns: str, kube: KubeSettings) -> dict[str, Any]:
    """The tenant's quota with ``kube.quota_headroom`` for rollouts: a backstop, since admission already keeps what
    the tenant holds within the quota (GPUs per type, replicas, CPU and memory at every deployment's max)."""

    def room(amount: int) -> int:
        return math.ceil(amount * kube.quota_headroom)

    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": object_meta("frontdoor-quota", ns, tenant_labels(tenant.slug)),
        "spec": {
            "hard": {
                # Kubernetes has one extended resource for every NVIDIA GPU, so the per-type quota is summed here
                # and enforced per type by the control plane's admission checks.
                f"requests.{GPU_RESOURCE}": str(room(sum(tenant.gpus.values()))),
                "pods": str(room(tenant.max_replicas)),
                "requests.cpu": str(room(tenant.cpu_cores)),
                "requests.memory": f"{room(tenant.memory_gib)}Gi",
            }
        },
    }


def _peer(namespace: str, pod_labels: dict[str, str]) -> dict[str, Any]:
    return {
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}},
        "podSelector": {"matchLabels": pod_labels},
    }


def _ingress_policy(tenant: TenantSpec, ns: str, kube: KubeSettings) -> dict[str, Any]:
    # vLLM, TGI and the built-in server serve /metrics on the model port, Triton on a port of its own.
    metrics_ports = [{"protocol": "TCP", "port": port} for port in (MODEL_PORT, TRITON_METRICS_PORT)]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(INGRESS_POLICY, ns, tenant_labels(tenant.slug)),
        "spec": {
            "podSelector": {"matchLabels": {MANAGED_BY: MANAGER}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [_peer(kube.gateway_namespace, dict(kube.gateway_pod_labels))],
                    "ports": [{"protocol": "TCP", "port": MODEL_PORT}],
                },
                {
                    "from": [_peer(kube.prometheus_namespace, dict(kube.prometheus_pod_labels))],
                    "ports": metrics_ports,
                },
            ],
        },
    }


def _egress_policy(tenant: TenantSpec, ns: str, kube: KubeSettings) -> dict[str, Any]:
    """Model pods may resolve names and reach the operator's download proxy or mirrors, nothing else: a tenant's
    image cannot call the cluster's services or the internet directly."""
    dns = {
        "to": [_peer("kube-system", {"k8s-app": "kube-dns"})],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    rules: list[dict[str, Any]] = [dns]
    if kube.egress_cidrs:
        rules.append({"to": [{"ipBlock": {"cidr": cidr}} for cidr in kube.egress_cidrs]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(EGRESS_POLICY, ns, tenant_labels(tenant.slug)),
        "spec": {"podSelector": {"matchLabels": {MANAGED_BY: MANAGER}}, "policyTypes": ["Egress"], "egress": rules},
    }


def _service_account(tenant: TenantSpec, ns: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": object_meta(MODEL_SERVICE_ACCOUNT, ns, tenant_labels(tenant.slug)),
        "automountServiceAccountToken": False,
        # Pods admitted under this account pull with the tenant's registry logins (none: an empty config).
        "imagePullSecrets": [{"name": REGISTRIES_NAME}],
    }


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _values(tenant: TenantSpec, ns: str) -> dict[str, Any]:
    data = {s.name: _b64(s.value) for s in tenant.secrets if s.kind == "generic"}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": object_meta(SECRETS_NAME, ns, tenant_labels(tenant.slug)),
        "type": "Opaque",
        "data": data,
    }


def _registries(tenant: TenantSpec, ns: str) -> dict[str, Any]:
    auths = {
        s.registry_server: {
            "username": s.registry_username,
            "password": s.value,
            "auth": _b64(f"{s.registry_username}:{s.value}"),
        }
        for s in tenant.secrets
        if s.kind == "registry"
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": object_meta(REGISTRIES_NAME, ns, tenant_labels(tenant.slug)),
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": _b64(json.dumps({"auths": auths}, sort_keys=True))},
    }


def redacted(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``objects`` with every Secret's values replaced by a placeholder: what a preview may show."""
    shown = []
    for obj in objects:
        if obj.get("kind") == "Secret":
            obj = {**obj, "data": dict.fromkeys(obj.get("data") or {}, "(not shown)")}
        shown.append(obj)
    return shown


def _model_cache(tenant: TenantSpec, ns: str, kube: KubeSettings) -> dict[str, Any]:
    """One cache per tenant: every replica of every deployment reads the weights its predecessors downloaded.
    ``ReadWriteMany`` lets replicas on different nodes share it; with ``ReadWriteOnce`` they must share a node."""
    spec: dict[str, Any] = {
        "accessModes": [kube.model_cache_access],
        "resources": {"requests": {"storage": kube.model_cache_size}},
    }
    if kube.model_cache_class:
        spec["storageClassName"] = kube.model_cache_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": object_meta(MODEL_CACHE_CLAIM, ns, tenant_labels(tenant.slug)),
        "spec": spec,
    }


def tenant_objects(tenant: TenantSpec, kube: KubeSettings) -> list[dict[str, Any]]:
    """The tenant's objects, the Namespace first (the others live in it)."""
    ns = namespace_name(tenant.slug, kube)
    return [
        _namespace(tenant, kube),
        _quota(tenant, ns, kube),
        _ingress_policy(tenant, ns, kube),
        _egress_policy(tenant, ns, kube),
        _values(tenant, ns),
        _registries(tenant, ns),
        _service_account(tenant, ns),
        _model_cache(tenant, ns, kube),
    ]
