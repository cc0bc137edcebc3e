"""Revisions, canaries, traffic weights and events of a deployment through the REST API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from rest_framework.test import APIClient

from controlplane.access import Principal
from deployments import services
from deployments.models import ModelDeployment, Revision
from tenants.models import AuditEvent, Role, Tenant

pytestmark = pytest.mark.django_db


def url(suffix: str = "") -> str:
    return f"/api/v1/tenants/acme/deployments/{suffix}"


@pytest.fixture
def chat(acme: Tenant, alice: User) -> ModelDeployment:
    principal = Principal(user_id=alice.pk, api_key=None, role=Role.OWNER, is_staff=False)
    return services.create_deployment(acme, {"name": "chat", "runtime": "vllm", "model": "m/v1"}, actor=principal)


def weights(deployment: ModelDeployment) -> dict[str, int]:
    return {r.name: r.weight for r in Revision.unscoped_objects.filter(deployment=deployment).order_by("number")}


def test_a_spec_change_makes_a_new_revision_that_takes_all_traffic(
    api: Callable[..., APIClient], bob: User, chat: ModelDeployment
) -> None:
    response = api(bob).patch(url("chat/"), {"model": "m/v2", "args": ["--max-model-len", "4096"]}, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()["latest_revision"] == 2
    assert response.json()["traffic"] == [{"revision": "r2", "weight": 100}]
    assert weights(chat) == {"r1": 0, "r2": 100}
    r1, r2 = Revision.unscoped_objects.filter(deployment=chat).order_by("number")
    assert r1.spec["model"] == "m/v1"
    assert r2.spec["model"] == "m/v2"
    assert r2.spec["args"] == ["--max-model-len", "4096"]
    assert r1.spec_hash != r2.spec_hash


def test_a_canary_takes_its_weight_and_the_others_keep_the_rest_proportionally(
    api: Callable[..., APIClient], bob: User, chat: ModelDeployment
) -> None:
    api(bob).patch(url("chat/"), {"model": "m/v2", "rollout": {"canary_weight": 40}}, format="json")
    assert weights(chat) == {"r1": 60, "r2": 40}

    response = api(bob).patch(url("chat/"), {"model": "m/v3", "rollout": {"canary_weight": 10}}, format="json")

    assert response.status_code == 200, response.json()
    assert weights(chat) == {"r1": 54, "r2": 36, "r3": 10}
    assert sum(weights(chat).values()) == 100


def test_proportional_split_always_sums_to_100() -> None:
    split = services.split_weights({1: 33, 2: 33, 3: 34}, 7)

    assert sum(split.values()) == 93
    assert all(weight >= 30 for weight in split.values())


def test_a_non_spec_change_makes_no_revision(api: Callable[..., APIClient], bob: User, chat: ModelDeployment) -> None:
    api(bob).patch(url("chat/"), {"timeout_s": 60, "rollout": {"canary_weight": 10}}, format="json")

    assert weights(chat) == {"r1": 100}


def test_revisions_are_listed_and_retrieved_by_number(
    api: Callable[..., APIClient], bob: User, vera: User, chat: ModelDeployment
) -> None:
    api(bob).patch(url("chat/"), {"model": "m/v2", "rollout": {"canary_weight": 25}}, format="json")

    listing = api(vera).get(url("chat/revisions/"))
    one = api(vera).get(url("chat/revisions/2/"))

    assert listing.status_code == 200
    assert [(r["name"], r["weight"]) for r in listing.json()["results"]] == [("r1", 75), ("r2", 25)]
    assert one.status_code == 200
    assert one.json()["spec"]["model"] == "m/v2"
    assert api(vera).get(url("chat/revisions/9/")).status_code == 404
    assert api(vera).get(url("chat/revisions/r1/")).status_code == 404


def test_revisions_are_immutable(chat: ModelDeployment) -> None:
    revision = Revision.unscoped_objects.get(deployment=chat, number=1)
    revision.spec = {**revision.spec, "model": "sneaky"}

    with pytest.raises(ValidationError):
        revision.save()

    assert Revision.unscoped_objects.get(pk=revision.pk).spec["model"] == "m/v1"


def test_revisions_cannot_be_written_through_the_api(
    api: Callable[..., APIClient], alice: User, chat: ModelDeployment
) -> None:
    client = api(alice)

    assert client.patch(url("chat/revisions/1/"), {"spec": {}}, format="json").status_code == 405
    assert client.delete(url("chat/revisions/1/")).status_code == 405
    assert client.post(url("chat/revisions/"), {"spec": {}}, format="json").status_code == 405


@pytest.fixture
def two_revisions(api: Callable[..., APIClient], bob: User, chat: ModelDeployment) -> ModelDeployment:
    api(bob).patch(url("chat/"), {"model": "m/v2", "rollout": {"canary_weight": 0}}, format="json")
    assert weights(chat) == {"r1": 100, "r2": 0}
    chat.refresh_from_db()
    return chat


@pytest.mark.parametrize(
    "body",
    [
        {"weights": {"r1": 80, "r2": 20}},
        {"weights": {"1": 80, "2": 20}},
        {"weights": [{"revision": "r1", "weight": 80}, {"revision": "r2", "weight": 20}]},
        {"weights": [{"revision": 1, "weight": 80}, {"revision": "r2", "weight": 20}]},
    ],
)
def test_it_sets_traffic_weights_in_either_form(
    api: Callable[..., APIClient], bob: User, two_revisions: ModelDeployment, body: dict[str, Any]
) -> None:
    response = api(bob).post(url("chat/traffic/"), body, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()["traffic"] == [{"revision": "r1", "weight": 80}, {"revision": "r2", "weight": 20}]
    assert response.json()["generation"] == two_revisions.generation + 1
    assert AuditEvent.objects.for_tenant(two_revisions.tenant_id).filter(action="deployment.traffic").exists()


def test_revisions_left_out_of_the_weights_get_zero(
    api: Callable[..., APIClient], bob: User, two_revisions: ModelDeployment
) -> None:
    response = api(bob).post(url("chat/traffic/"), {"weights": {"r2": 100}}, format="json")

    assert response.status_code == 200
    assert weights(two_revisions) == {"r1": 0, "r2": 100}


@pytest.mark.parametrize(
    ("body", "message_part"),
    [
        ({"weights": {"r1": 80, "r2": 30}}, "sum to 100"),
        ({"weights": {"r1": 50}}, "sum to 100"),
        ({"weights": {"r1": 50, "r7": 50}}, "no revision r7"),
        ({"weights": {"r1": 120, "r2": -20}}, "between 0 and 100"),
        ({"weights": {"banana": 100}}, "not a revision name"),
        ({"weights": [{"revision": "r1", "weight": 50}, {"revision": "1", "weight": 50}]}, "given twice"),
        ({"weights": [{"revision": "r1"}]}, "give"),
        ({"weights": "r1=100"}, "give"),
        ({"weights": {}}, "at least one"),
        ({"weights": {"r1": 50.5, "r2": 49.5}}, "integer"),
        ({}, "required"),
    ],
)
def test_it_refuses_bad_weights_and_changes_nothing(
    api: Callable[..., APIClient], bob: User, two_revisions: ModelDeployment, body: dict[str, Any], message_part: str
) -> None:
    before = weights(two_revisions)

    response = api(bob).post(url("chat/traffic/"), body, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert "weights" in error["fields"]
    assert message_part in error["message"]
    assert weights(two_revisions) == before


def test_events_list_what_happened_newest_first(
    api: Callable[..., APIClient], bob: User, vera: User, chat: ModelDeployment
) -> None:
    api(bob).post(url("chat/scale/"), {"max_replicas": 2}, format="json")
    api(bob).patch(url("chat/"), {"model": "m/v2"}, format="json")

    response = api(vera).get(url("chat/events/"))

    assert response.status_code == 200
    assert [e["reason"] for e in response.json()["results"]] == ["RevisionCreated", "Scaled", "Created"]


@pytest.mark.django_db(transaction=True)
def test_a_traffic_change_reaches_the_gateway_snapshot_after_commit(
    api: Callable[..., APIClient], bob: User, chat: ModelDeployment, redis_prefix: str
) -> None:
    """docs/contracts.md "Config snapshot": revision weights are what the gateway routes by."""
    from controlplane.contracts.snapshot import read_document
    from controlplane.redis import get_redis, redis_prefix

    api(bob).patch(url("chat/"), {"model": "m/v2", "rollout": {"canary_weight": 0}}, format="json")

    response = api(bob).post(url("chat/traffic/"), {"weights": {"r1": 70, "r2": 30}}, format="json")

    assert response.status_code == 200
    snapshot = read_document(get_redis(), redis_prefix())
    assert snapshot is not None
    routed = snapshot["deployments"]["acme/chat"]["revisions"]
    assert {r["name"]: r["weight"] for r in routed} == {"r1": 70, "r2": 30}
