"""A deployment's protocol and image generation through the REST API: defaults, refusals naming the field, what an
update that changes the runtime does, and what each change makes (a revision or only a new snapshot)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from deployments.models import ModelDeployment, Revision
from tenants.models import Tenant
from tests.support.rows import deployment_row_counts

pytestmark = pytest.mark.django_db

BASE = "/api/v1/tenants/acme/deployments/"
CPU = {"gpu_type": "", "gpu_count": 0}


def specs(acme: Tenant, name: str) -> list[dict[str, Any]]:
    return list(
        Revision.objects.for_tenant(acme)
        .filter(deployment__name=name)
        .order_by("number")
        .values_list("spec", flat=True)
    )


def create(client: APIClient, payload: dict[str, Any]) -> dict[str, Any]:
    response = client.post(BASE, payload, format="json")
    assert response.status_code == 201, response.json()
    return dict(response.json())


# --- defaults ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("runtime", "protocol"),
    [("vllm", "openai"), ("tgi", "openai"), ("triton", "v2"), ("builtin", "openai")],
)
def test_a_deployment_that_names_no_protocol_gets_its_runtimes_and_no_images(
    api: Callable[..., APIClient],
    bob: User,
    acme: Tenant,
    deployment_payload: Callable[..., dict[str, Any]],
    runtime: str,
    protocol: str,
) -> None:
    body = create(api(bob), deployment_payload(runtime=runtime, **CPU))

    assert (body["protocol"], body["image_generation"]) == (protocol, False)
    # The runtime's own protocol is left out of the frozen spec: revisions hash as they did before protocols.
    assert "protocol" not in specs(acme, "chat-small")[0]


def test_a_builtin_v2_deployment_freezes_its_protocol_in_the_revision(
    api: Callable[..., APIClient], bob: User, acme: Tenant, deployment_payload: Callable[..., dict[str, Any]]
) -> None:
    body = create(api(bob), deployment_payload(name="ranker", runtime="builtin", protocol="v2", model="m/r", **CPU))

    assert body["protocol"] == "v2"
    assert specs(acme, "ranker")[0]["protocol"] == "v2"


def test_a_builtin_openai_deployment_may_serve_images(
    api: Callable[..., APIClient], bob: User, acme: Tenant, deployment_payload: Callable[..., dict[str, Any]]
) -> None:
    body = create(api(bob), deployment_payload(runtime="builtin", image_generation=True, **CPU))

    assert (body["protocol"], body["image_generation"]) == ("openai", True)
    assert "image_generation" not in specs(acme, "chat-small")[0]  # routing, not what a replica runs


# --- refusals ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field", "says"),
    [
        ({"protocol": "grpc"}, "protocol", "not a valid choice"),
        ({"protocol": ""}, "protocol", "not a valid choice"),
        ({"protocol": None}, "protocol", "may not be null"),
        ({"protocol": ["v2"]}, "protocol", "not a valid choice"),
        ({"protocol": "V2"}, "protocol", "not a valid choice"),
        ({"runtime": "vllm", "protocol": "v2"}, "protocol", "speaks openai"),
        ({"runtime": "tgi", "protocol": "v2"}, "protocol", "speaks openai"),
        ({"runtime": "triton", "protocol": "openai"}, "protocol", "speaks v2"),
        ({"runtime": "builtin", "protocol": "v2", "image_generation": True}, "image_generation", "OpenAI route"),
        ({"runtime": "triton", "image_generation": True}, "image_generation", "OpenAI route"),
        ({"runtime": "vllm", "image_generation": True}, "image_generation", "serves no images"),
        ({"runtime": "tgi", "image_generation": True}, "image_generation", "serves no images"),
        ({"image_generation": "true"}, "image_generation", "valid boolean"),
        ({"image_generation": "yes"}, "image_generation", "valid boolean"),
        ({"image_generation": 1}, "image_generation", "valid boolean"),
        ({"image_generation": None}, "image_generation", "may not be null"),
        ({"image_generation": {}}, "image_generation", "valid boolean"),
        ({"args": ["--protocol", "v2"]}, "args", "set by the platform"),
        ({"args": ["--proto=openai"]}, "args", "set by the platform"),
    ],
)
def test_it_refuses_a_bad_protocol_or_image_generation_naming_the_field_and_writes_nothing(
    api: Callable[..., APIClient],
    bob: User,
    deployment_payload: Callable[..., dict[str, Any]],
    overrides: dict[str, Any],
    field: str,
    says: str,
) -> None:
    before = deployment_row_counts()

    response = api(bob).post(BASE, deployment_payload(**{"runtime": "builtin", **CPU, **overrides}), format="json")

    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert says in " ".join(error["fields"][field]), error
    assert deployment_row_counts() == before


def test_a_patch_to_a_protocol_the_runtime_cannot_speak_changes_nothing(
    api: Callable[..., APIClient], bob: User, acme: Tenant, deployment_payload: Callable[..., dict[str, Any]]
) -> None:
    create(api(bob), deployment_payload())
    before = deployment_row_counts()

    for patch, field in (({"protocol": "v2"}, "protocol"), ({"image_generation": True}, "image_generation")):
        response = api(bob).patch(f"{BASE}chat-small/", patch, format="json")
        assert response.status_code == 400, response.json()
        assert list(response.json()["error"]["fields"]) == [field]

    assert deployment_row_counts() == before
    stored = ModelDeployment.objects.for_tenant(acme).get(name="chat-small")
    assert (stored.protocol, stored.image_generation) == ("openai", False)


# --- updates -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "then", "protocol"),
    [
        ({"runtime": "vllm"}, {"runtime": "triton"}, "v2"),
        ({"runtime": "builtin", "protocol": "v2"}, {"runtime": "vllm"}, "openai"),
        ({"runtime": "triton"}, {"runtime": "builtin"}, "v2"),  # builtin speaks v2 too: kept, not guessed
        ({"runtime": "builtin"}, {"runtime": "triton"}, "v2"),
    ],
)
def test_a_runtime_change_that_names_no_protocol_takes_the_only_one_the_new_runtime_speaks(
    api: Callable[..., APIClient],
    bob: User,
    acme: Tenant,
    deployment_payload: Callable[..., dict[str, Any]],
    first: dict[str, Any],
    then: dict[str, Any],
    protocol: str,
) -> None:
    create(api(bob), deployment_payload(**CPU, **first))

    response = api(bob).patch(f"{BASE}chat-small/", then, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()["protocol"] == protocol
    newest = specs(acme, "chat-small")[-1]
    assert newest["runtime"] == then["runtime"]
    assert newest.get("protocol", {"triton": "v2"}.get(then["runtime"], "openai")) == protocol


def test_a_runtime_change_refuses_rather_than_drops_image_generation(
    api: Callable[..., APIClient], bob: User, acme: Tenant, deployment_payload: Callable[..., dict[str, Any]]
) -> None:
    create(api(bob), deployment_payload(runtime="builtin", image_generation=True, **CPU))
    before = deployment_row_counts()

    response = api(bob).patch(f"{BASE}chat-small/", {"runtime": "vllm"}, format="json")

    assert response.status_code == 400
    assert "serves no images" in response.json()["error"]["fields"]["image_generation"][0]
    assert deployment_row_counts() == before


def test_a_protocol_change_makes_a_revision_that_takes_all_traffic_and_never_a_canary(
    api: Callable[..., APIClient], bob: User, acme: Tenant, deployment_payload: Callable[..., dict[str, Any]]
) -> None:
    create(api(bob), deployment_payload(runtime="builtin", **CPU))
    before = deployment_row_counts()

    canary = {"protocol": "v2", "rollout": {"canary_weight": 20}}
    refused = api(bob).patch(f"{BASE}chat-small/", canary, format="json")
    assert refused.status_code == 400
    assert "one protocol" in refused.json()["error"]["fields"]["rollout"][0]
    assert deployment_row_counts() == before

    response = api(bob).patch(f"{BASE}chat-small/", {"protocol": "v2"}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["traffic"] == [{"revision": "r2", "weight": 100}]
    assert specs(acme, "chat-small")[-1]["protocol"] == "v2"


def test_traffic_cannot_go_back_to_a_revision_of_another_protocol(
    api: Callable[..., APIClient], bob: User, acme: Tenant, deployment_payload: Callable[..., dict[str, Any]]
) -> None:
    create(api(bob), deployment_payload(runtime="builtin", **CPU))
    assert api(bob).patch(f"{BASE}chat-small/", {"protocol": "v2"}, format="json").status_code == 200

    response = api(bob).post(f"{BASE}chat-small/traffic/", {"weights": {"r1": 50, "r2": 50}}, format="json")

    assert response.status_code == 400
    assert "r1 serves 'openai'" in response.json()["error"]["fields"]["weights"][0]
    weights = dict(Revision.objects.for_tenant(acme).values_list("number", "weight"))
    assert weights == {1: 0, 2: 100}


def test_image_generation_changes_routing_only_never_a_revision(
    api: Callable[..., APIClient], bob: User, acme: Tenant, deployment_payload: Callable[..., dict[str, Any]]
) -> None:
    create(api(bob), deployment_payload(runtime="builtin", **CPU))

    response = api(bob).patch(f"{BASE}chat-small/", {"image_generation": True}, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()["image_generation"] is True
    assert response.json()["latest_revision"] == 1
    assert len(specs(acme, "chat-small")) == 1


# --- schema --------------------------------------------------------------------------------------------------------


def test_the_schema_documents_both_fields(api: Callable[..., APIClient], alice: User) -> None:
    schema = api(alice).get("/api/schema/?format=json").json()
    components = schema["components"]["schemas"]
    deployment = components["Deployment"]["properties"]

    protocol = deployment["protocol"]
    (ref,) = (part["$ref"] for part in protocol["allOf"])  # an enum with a description is an allOf of its $ref
    assert components[ref.rsplit("/", 1)[-1]]["enum"] == ["openai", "v2"]
    assert "the runtime's" in protocol["description"]
    assert deployment["image_generation"]["type"] == "boolean"
    assert "protocol" not in components["Deployment"].get("required", [])
