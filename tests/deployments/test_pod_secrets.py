"""Tenant secrets on Kubernetes: values live only in the tenant's Secrets, pods read them by reference and roll when
one is rotated, registry logins reach every pod through the service account, and previews never show a value."""

from __future__ import annotations

# pytest fixtures are imported by name, which ruff reads as redefinitions:
# ruff: noqa: F811
import base64
import json
from dataclasses import replace
from typing import Any

import pytest

from deployments.backends import manifests
from deployments.backends.base import DeploymentSpec, SecretValue
from deployments.backends.kubernetes import KubernetesBackend
from tests.deployments import examples
from tests.fakekube.fixtures import fakekube, kube_backend  # noqa: F401
from tests.fakekube.server import FakeKubeServer
from tests.fakekube.validation import manifest_problem

ALL = sorted(examples.EXAMPLES)
VALUES = (examples.HF_TOKEN_VALUE, examples.REGISTRY_PASSWORD)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def forms_of(value: str) -> list[str]:
    """The ways a value could leak into a manifest: as is, base64, or inside a registry's ``auth``."""
    return [value, b64(value), b64(f"$oauthtoken:{value}")]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def model_container(objects: list[dict[str, Any]], deployment: str) -> dict[str, Any]:
    container: dict[str, Any] = by_kind(objects, "Deployment")[deployment]["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.mark.parametrize("name", ALL)
def test_no_secret_value_appears_in_any_object_but_the_tenants_secrets(name: str) -> None:
    spec = examples.EXAMPLES[name]()
    applied = examples.render(spec, reveal=True)
    outside = manifests.to_yaml([o for o in applied if o["kind"] != "Secret"])
    previewed = manifests.to_yaml(examples.render(spec))

    for value in VALUES:
        for form in forms_of(value):
            assert form not in outside
            assert form not in previewed
    assert "(not shown)" in previewed


def test_a_pod_reads_each_secret_variable_by_reference_from_the_tenants_secret() -> None:
    objects = examples.render(examples.llama_70b(), reveal=True)
    env = {e["name"]: e for e in model_container(objects, "llama-70b-r1")["env"]}

    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "frontdoor-secrets", "key": "hf-token"}},
    }
    assert env["VLLM_LOGGING_LEVEL"] == {"name": "VLLM_LOGGING_LEVEL", "value": "INFO"}
    values = by_kind(objects, "Secret")["frontdoor-secrets"]
    assert values["type"] == "Opaque"
    assert values["data"] == {"hf-token": b64(examples.HF_TOKEN_VALUE)}
    assert manifest_problem(values) is None


def test_registry_logins_reach_every_pod_through_the_service_account() -> None:
    objects = examples.render(examples.canary(), reveal=True)
    registries = by_kind(objects, "Secret")["frontdoor-registries"]
    account = by_kind(objects, "ServiceAccount")["frontdoor-model"]

    config = json.loads(base64.b64decode(registries["data"][".dockerconfigjson"]))
    assert registries["type"] == "kubernetes.io/dockerconfigjson"
    assert config == {
        "auths": {
            "nvcr.io": {
                "username": "$oauthtoken",
                "password": examples.REGISTRY_PASSWORD,
                "auth": b64(f"$oauthtoken:{examples.REGISTRY_PASSWORD}"),
            }
        }
    }
    assert account["imagePullSecrets"] == [{"name": "frontdoor-registries"}]
    for pod in (o["spec"]["template"]["spec"] for o in objects if o["kind"] == "Deployment"):
        assert pod["serviceAccountName"] == "frontdoor-model"
    assert manifest_problem(registries) is None


def test_a_tenant_without_secrets_gets_empty_ones_so_deleted_values_leave_the_cluster() -> None:
    bare = replace(examples.TENANT, secrets=())
    objects = manifests.tenant_objects(bare, examples.DOC_KUBE)
    secrets = by_kind(objects, "Secret")

    assert secrets["frontdoor-secrets"]["data"] == {}
    registry = json.loads(base64.b64decode(secrets["frontdoor-registries"]["data"][".dockerconfigjson"]))
    assert registry == {"auths": {}}


def rotated(spec: DeploymentSpec, version: int) -> DeploymentSpec:
    secrets = tuple(
        replace(s, version=version, value=f"{s.value}-v{version}") if s.name == "hf-token" else s
        for s in spec.tenant.secrets
    )
    return replace(spec, tenant=replace(spec.tenant, secrets=secrets))


def test_rotating_a_secret_changes_the_pod_template_of_exactly_the_revisions_that_read_it() -> None:
    before = examples.render(examples.llama_70b())
    after = examples.render(rotated(examples.llama_70b(), 4))
    embed_before = examples.render(examples.builtin_hpa())
    embed_after = examples.render(rotated(examples.builtin_hpa(), 4))

    def template(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
        meta: dict[str, Any] = by_kind(objects, "Deployment")[name]["spec"]["template"]["metadata"]
        return meta

    assert template(before, "llama-70b-r1")["annotations"] == {"frontdoor.dev/secret-versions": "hf-token=3"}
    assert template(after, "llama-70b-r1")["annotations"] == {"frontdoor.dev/secret-versions": "hf-token=4"}
    # A revision that reads no secret does not roll when one is rotated.
    assert "annotations" not in template(embed_before, "embed-r1")
    assert template(embed_before, "embed-r1") == template(embed_after, "embed-r1")


def test_the_backend_applies_the_secrets_into_the_tenant_namespace_and_rotates_them(
    fakekube: FakeKubeServer, kube_backend: KubernetesBackend
) -> None:
    kube_backend.apply_deployment(examples.llama_70b())
    stored = fakekube.store.get("secrets", "fd-acme", "frontdoor-secrets")
    assert stored["data"] == {"hf-token": b64(examples.HF_TOKEN_VALUE)}
    assert fakekube.store.get("serviceaccounts", "fd-acme", "frontdoor-model")["imagePullSecrets"] == [
        {"name": "frontdoor-registries"}
    ]

    kube_backend.apply_deployment(rotated(examples.llama_70b(), 4))

    stored = fakekube.store.get("secrets", "fd-acme", "frontdoor-secrets")
    assert stored["data"] == {"hf-token": b64(f"{examples.HF_TOKEN_VALUE}-v4")}
    template = fakekube.store.get("deployments", "fd-acme", "llama-70b-r1")["spec"]["template"]
    assert template["metadata"]["annotations"]["frontdoor.dev/secret-versions"] == "hf-token=4"


def test_a_spec_never_shows_a_value_when_logged() -> None:
    secret = SecretValue(name="hf-token", kind="generic", version=1, value=examples.HF_TOKEN_VALUE)
    spec = examples.llama_70b()

    assert examples.HF_TOKEN_VALUE not in repr(secret)
    assert examples.HF_TOKEN_VALUE not in repr(spec)
