"""The Kubernetes backend applies a revision's Service before its Deployment, owns it afterwards, and applies the
tenant's service account, model cache and egress policy; a second pass writes nothing."""

from __future__ import annotations

# pytest fixtures are imported by name, which ruff reads as redefinitions:
# ruff: noqa: F811
from typing import Any

import pytest

from deployments.backends.base import PermanentBackendError
from deployments.backends.kubernetes import KubernetesBackend
from tests.deployments import examples
from tests.fakekube.fixtures import fakekube, kube_backend  # noqa: F401
from tests.fakekube.server import FakeKubeServer
from tests.fakekube.validation import server_side_problem

NS = "fd-acme"


def names(server: FakeKubeServer, plural: str) -> list[str]:
    return sorted(name for (p, ns, name) in server.store.objects if p == plural and ns == NS)


def test_it_applies_services_first_and_leaves_no_gpu_pods_behind_a_refused_one(
    fakekube: FakeKubeServer, kube_backend: KubernetesBackend
) -> None:
    def refuse_services(obj: dict[str, Any]) -> str | None:
        if obj.get("kind") == "Service":
            return "metadata.name: Invalid value: a DNS-1035 label must start with a letter"
        return server_side_problem(obj)

    fakekube.store.validator = refuse_services
    with pytest.raises(PermanentBackendError, match="DNS-1035"):
        kube_backend.apply_deployment(examples.llama_70b())
    assert names(fakekube, "deployments") == []


def test_it_owns_services_by_their_deployment_and_writes_nothing_the_second_time(
    fakekube: FakeKubeServer, kube_backend: KubernetesBackend
) -> None:
    spec = examples.canary()
    kube_backend.apply_deployment(spec)
    verbs = [(plural, name) for _verb, plural, _ns, name in fakekube.store.stats.write_log if plural != "namespaces"]
    deployments_at = [i for i, (plural, _name) in enumerate(verbs) if plural == "deployments"]
    services_at = [i for i, (plural, _name) in enumerate(verbs) if plural == "services"]
    assert services_at[0] < deployments_at[0]
    for name in ("chat-r1", "chat-r2"):
        owner = fakekube.store.get("services", NS, name)["metadata"]["ownerReferences"][0]
        assert owner["uid"] == fakekube.store.get("deployments", NS, name)["metadata"]["uid"]
    assert names(fakekube, "serviceaccounts") == ["frontdoor-model"]
    assert names(fakekube, "persistentvolumeclaims") == ["frontdoor-model-cache"]
    assert names(fakekube, "networkpolicies") == ["frontdoor-egress", "frontdoor-gateway-only"]
    fakekube.store.reset_stats()
    kube_backend._tenants_applied.clear()  # read the tenant's objects again too
    kube_backend.apply_deployment(spec)
    assert fakekube.store.stats.writes == 0
