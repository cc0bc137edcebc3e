"""Every name the API accepts makes Kubernetes names the API server accepts: a deployment name starts with a letter
(each revision's Service is a DNS-1035 label) and is short enough for ``<name>-r<n>``; a tenant slug makes a
namespace name."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from controlplane.validators import DEPLOYMENT_NAME_MAX_LENGTH, INT_MAX
from deployments import services
from deployments.backends import manifests
from deployments.backends.base import DeploymentSpec, RevisionSpec, TenantSpec
from deployments.models import ModelDeployment, Revision
from tests.support.rows import deployment_row_counts

BASE = "/api/v1/tenants/acme/deployments/"
Api = Callable[[User | None], APIClient]
Payload = Callable[..., dict[str, Any]]

# The Kubernetes API server's own rules (apimachinery's IsDNS1035Label and IsDNS1123Label).
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LONGEST_NAME = "m" + "x" * (DEPLOYMENT_NAME_MAX_LENGTH - 1)
LONGEST_SLUG = "t" * 40


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["70b-chat", "0", "1-chat", "8b"])
def test_it_refuses_a_name_that_starts_with_a_digit_and_says_why(
    api: Api, bob: User, deployment_payload: Payload, name: str
) -> None:
    before = deployment_row_counts()

    response = api(bob).post(BASE, deployment_payload(name=name), format="json")

    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    assert error["fields"]["name"] == ["must start with a letter: Kubernetes Service names are DNS-1035 labels"]
    assert deployment_row_counts() == before


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["chat-70b", "c", LONGEST_NAME])
def test_it_accepts_a_name_that_starts_with_a_letter(
    api: Api, bob: User, deployment_payload: Payload, name: str
) -> None:
    response = api(bob).post(BASE, deployment_payload(name=name), format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["name"] == name


@pytest.mark.django_db
def test_a_name_one_character_too_long_is_refused(api: Api, bob: User, deployment_payload: Payload) -> None:
    response = api(bob).post(BASE, deployment_payload(name=LONGEST_NAME + "x"), format="json")

    assert response.status_code == 400
    assert "name" in response.json()["error"]["fields"]


@pytest.mark.parametrize("runtime", ["vllm", "builtin"])
@pytest.mark.parametrize("autoscaler", ["kpa", "hpa"])
def test_the_longest_names_make_objects_the_api_server_accepts(runtime: str, autoscaler: str) -> None:
    tenant = TenantSpec(slug=LONGEST_SLUG, gpus={"nvidia-h100": 8}, max_replicas=8, cpu_cores=64, memory_gib=512)
    gpus = 1 if runtime == "vllm" else 0
    spec = {
        "runtime": runtime,
        "model": "m",
        "image": "",
        "args": [],
        "env": {},
        "gpu_type": "nvidia-h100" if gpus else "",
        "gpu_count": gpus,
    }
    revisions = (
        RevisionSpec(id=1, number=INT_MAX - 1, spec=spec, replicas=1, weight=50),
        RevisionSpec(id=2, number=INT_MAX, spec=spec, replicas=1, weight=50),
    )
    deployment = DeploymentSpec(
        id=1,
        tenant=tenant,
        name=LONGEST_NAME,
        autoscaler_class=autoscaler,
        min_replicas=1,
        max_replicas=2,
        target_concurrency=8,
        revisions=revisions,
    )
    kube = manifests.KubeSettings()

    objects = manifests.tenant_objects(tenant, kube) + manifests.deployment_objects(deployment, kube)

    assert objects
    for obj in objects:
        metadata = obj["metadata"]
        where = f"{obj['kind']}/{metadata['name']}"
        assert len(metadata["name"]) <= 63 and DNS1123_LABEL.match(metadata["name"]), where
        if "namespace" in metadata:
            assert len(metadata["namespace"]) <= 63 and DNS1123_LABEL.match(metadata["namespace"]), where
        if obj["kind"] == "Service":
            assert DNS1035_LABEL.match(metadata["name"]), where


def test_a_tenant_slug_makes_a_namespace_name_the_api_server_accepts() -> None:
    namespace = manifests.namespace_name(LONGEST_SLUG, manifests.KubeSettings())

    assert len(namespace) <= 63
    assert DNS1123_LABEL.match(namespace)


@pytest.mark.django_db
def test_a_deployment_named_before_the_rule_can_still_be_changed(api: Api, bob: User, acme: Any) -> None:
    legacy = ModelDeployment.unscoped_objects.create(tenant=acme, name="70b-chat", runtime="builtin", model="m")
    Revision.unscoped_objects.create(deployment=legacy, number=1, spec=legacy.revision_spec(), weight=100)

    response = api(bob).patch(f"{BASE}70b-chat/", {"max_replicas": 2, "memory_gib": 4}, format="json")

    assert response.status_code == 200, response.json()
    services.scale_deployment(legacy, min_replicas=0, actor=None)
