"""The snapshot says which protocol a deployment speaks and whether it serves images, only when that is not what
their absence means (so the documents of every other deployment keep their bytes), and Triton's model name."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis

from controlplane.contracts.redis_names import config_version_key
from controlplane.contracts.snapshot import read_document
from controlplane.snapshot.publisher import build_snapshot
from controlplane.snapshot.triggers import SNAPSHOT_FIELDS
from deployments import services
from deployments.models import ModelDeployment, Revision
from quotas.models import Quota
from tenants.models import Tenant

pytestmark = pytest.mark.django_db(transaction=True)

# The keys of a deployment's document before protocols (a builtin one on the local backend).
KEYS_BEFORE = {
    "id",
    "tenant",
    "name",
    "model",
    "runtime",
    "state",
    "min_replicas",
    "max_replicas",
    "max_concurrent_requests",
    "timeout_s",
    "created",
    "revisions",
    "batch_per_replica",
    "batch_replicas",
}


@pytest.fixture
def acme() -> Tenant:
    tenant = Tenant.objects.create(slug="acme", name="Acme")
    Quota.unscoped_objects.create(tenant=tenant)
    return tenant


def deployment(tenant: Tenant, name: str, **fields: Any) -> ModelDeployment:
    fields.setdefault("model", "frontdoor/sim-chat")
    fields.setdefault("min_replicas", 0)
    return ModelDeployment.unscoped_objects.create(tenant=tenant, name=name, **fields)


def revision(dep: ModelDeployment, number: int, weight: int, **spec: Any) -> Revision:
    return Revision.unscoped_objects.create(
        deployment=dep, number=number, spec={**dep.revision_spec(), **spec}, weight=weight
    )


def published(r: redis.Redis, prefix: str, name: str) -> dict[str, Any]:
    document = read_document(r, prefix)
    assert document is not None
    return dict(document["deployments"][f"acme/{name}"])


def test_an_openai_deployment_without_images_publishes_neither_field(acme: Tenant) -> None:
    chat = deployment(acme, "chat")
    revision(chat, 1, 100)

    doc = build_snapshot()["deployments"]["acme/chat"]

    assert set(doc) == KEYS_BEFORE
    assert b"protocol" not in orjson.dumps(doc) and b"image_generation" not in orjson.dumps(doc)


def test_a_v2_deployment_publishes_its_protocol_and_an_image_deployment_says_so(acme: Tenant) -> None:
    revision(deployment(acme, "ranker", protocol="v2", model="frontdoor/ranker"), 1, 100)
    revision(deployment(acme, "painter", image_generation=True), 1, 100)

    deployments = build_snapshot()["deployments"]

    ranker, painter = deployments["acme/ranker"], deployments["acme/painter"]
    assert ranker["protocol"] == "v2" and "image_generation" not in ranker
    assert ranker["model"] == "frontdoor/ranker"  # the built-in server answers under its --model-name
    assert painter["image_generation"] is True and "protocol" not in painter
    assert set(painter) == {*KEYS_BEFORE, "image_generation"}


def test_triton_models_are_named_after_the_deployment_in_the_document_and_every_revision(acme: Tenant) -> None:
    recsys = deployment(acme, "recsys", runtime="triton", protocol="v2", model="s3://bucket/repository")
    revision(recsys, 1, 80)
    revision(recsys, 2, 20, model="s3://bucket/repository-v2")

    doc = build_snapshot()["deployments"]["acme/recsys"]

    assert (doc["protocol"], doc["model"]) == ("v2", "recsys")
    assert [(rev["name"], rev["model"]) for rev in doc["revisions"]] == [("r1", "recsys"), ("r2", "recsys")]


def test_the_triggers_watch_both_fields() -> None:
    assert {"protocol", "image_generation"} <= SNAPSHOT_FIELDS[ModelDeployment]


@pytest.mark.parametrize(("field", "value"), [("image_generation", True), ("protocol", "v2")])
def test_a_save_of_either_field_republishes(
    acme: Tenant, r: redis.Redis, redis_prefix: str, field: str, value: Any
) -> None:
    chat = deployment(acme, "chat")
    revision(chat, 1, 100)
    before = int(r.get(config_version_key(redis_prefix)) or 0)

    setattr(chat, field, value)
    chat.save(update_fields=[field])

    assert int(r.get(config_version_key(redis_prefix)) or 0) > before
    assert published(r, redis_prefix, "chat")[field] == value


def test_turning_image_generation_on_through_the_service_reaches_the_gateway_without_a_revision(
    acme: Tenant, r: redis.Redis, redis_prefix: str
) -> None:
    chat = services.create_deployment(
        acme, {"name": "chat", "runtime": "builtin", "model": "frontdoor/sim-chat"}, actor=None
    )
    assert "image_generation" not in published(r, redis_prefix, "chat")

    services.update_deployment(chat, {"image_generation": True}, actor=None)

    doc = published(r, redis_prefix, "chat")
    assert doc["image_generation"] is True
    assert [rev["name"] for rev in doc["revisions"]] == ["r1"]
