"""A tenant's namespace contains its pods: Pod Security admission, an egress policy, an ingress policy that admits
the gateway and Prometheus, a service account without a token, and a model cache, each configurable."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controlplane.contracts.env import ImproperlyConfiguredEnv
from deployments.backends import manifests
from tests.deployments.examples import TENANT
from tests.fakekube.validation import manifest_problem


def tenant_objects(kube: manifests.KubeSettings) -> dict[str, dict[str, Any]]:
    objects = manifests.tenant_objects(TENANT, kube)
    assert all(manifest_problem(o) is None for o in objects)
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in objects}


def test_it_labels_the_namespace_for_pod_security_admission(monkeypatch: pytest.MonkeyPatch) -> None:
    labels = tenant_objects(manifests.KubeSettings())["Namespace/fd-acme"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/warn"] == labels["pod-security.kubernetes.io/audit"] == "restricted"
    monkeypatch.setenv("FRONTDOOR_K8S_POD_SECURITY", "restricted")
    labels = tenant_objects(manifests.KubeSettings.from_env())["Namespace/fd-acme"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_it_lets_model_pods_reach_only_dns_and_the_operators_cidrs(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = tenant_objects(manifests.KubeSettings())["NetworkPolicy/frontdoor-egress"]
    assert policy["spec"]["policyTypes"] == ["Egress"]
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/managed-by": "frontdoor"}}
    (dns,) = policy["spec"]["egress"]
    assert dns["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]
    assert dns["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    monkeypatch.setenv("FRONTDOOR_K8S_EGRESS_CIDRS", "10.20.30.0/24, 192.0.2.7")
    policy = tenant_objects(manifests.KubeSettings.from_env())["NetworkPolicy/frontdoor-egress"]
    assert policy["spec"]["egress"][1] == {
        "to": [{"ipBlock": {"cidr": "10.20.30.0/24"}}, {"ipBlock": {"cidr": "192.0.2.7/32"}}]
    }


def test_it_admits_the_clusters_prometheus_on_the_metrics_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRONTDOOR_K8S_PROMETHEUS_NAMESPACE", "observability")
    monkeypatch.setenv("FRONTDOOR_K8S_PROMETHEUS_POD_LABELS", json.dumps({"app": "prometheus-server"}))
    policy = tenant_objects(manifests.KubeSettings.from_env())["NetworkPolicy/frontdoor-gateway-only"]
    gateway, prometheus = policy["spec"]["ingress"]
    assert gateway["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "frontdoor-gateway"}
    assert gateway["ports"] == [{"protocol": "TCP", "port": 8000}]
    assert prometheus["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}},
            "podSelector": {"matchLabels": {"app": "prometheus-server"}},
        }
    ]
    assert {p["port"] for p in prometheus["ports"]} == {8000, 8002}


def test_it_gives_the_pods_a_service_account_without_a_token() -> None:
    account = tenant_objects(manifests.KubeSettings())["ServiceAccount/frontdoor-model"]
    assert account["automountServiceAccountToken"] is False
    assert account["metadata"]["namespace"] == "fd-acme"


def test_it_claims_a_model_cache_with_the_configured_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    claim = tenant_objects(manifests.KubeSettings())["PersistentVolumeClaim/frontdoor-model-cache"]
    assert claim["spec"] == {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Ti"}}}
    monkeypatch.setenv("FRONTDOOR_K8S_MODEL_CACHE_CLASS", "filestore-rwx")
    monkeypatch.setenv("FRONTDOOR_K8S_MODEL_CACHE_SIZE", "2500Gi")
    monkeypatch.setenv("FRONTDOOR_K8S_MODEL_CACHE_ACCESS", "ReadWriteOnce")
    claim = tenant_objects(manifests.KubeSettings.from_env())["PersistentVolumeClaim/frontdoor-model-cache"]
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "2500Gi"}},
        "storageClassName": "filestore-rwx",
    }


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FRONTDOOR_K8S_POD_SECURITY", "strict"),
        ("FRONTDOOR_K8S_MODEL_CACHE_SIZE", "a lot"),
        ("FRONTDOOR_K8S_MODEL_CACHE_ACCESS", "ReadWriteSometimes"),
        ("FRONTDOOR_K8S_EGRESS_CIDRS", "10.0.0.0/33"),
        ("FRONTDOOR_K8S_PROMETHEUS_POD_LABELS", "[1, 2]"),
        ("FRONTDOOR_K8S_GATEWAY_POD_LABELS", "not json"),
    ],
)
def test_it_refuses_settings_the_cluster_would_refuse(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ImproperlyConfiguredEnv, match=variable):
        manifests.KubeSettings.from_env()
