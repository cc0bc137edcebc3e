"""The protocol in a deployment's frozen revision spec: left out at the runtime's default, so revisions made before
protocols existed hash as they did; and the migration that gave existing deployments their protocol."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from django.apps import apps

from deployments.models import ModelDeployment, Revision, spec_digest
from deployments.models.deployment import spec_protocol
from deployments.sizing import SIZING_FIELDS
from tenants.models import Tenant

# The fields a revision froze before protocols existed.
FIELDS_BEFORE = ("runtime", "model", "image", "args", "env", "secret_env", "gpu_type", "gpu_count", *SIZING_FIELDS)


def spec_as_made_before(deployment: ModelDeployment) -> dict[str, Any]:
    """What ``revision_spec`` froze before protocols: every field, minus the ones left out at their defaults."""
    spec = {field: getattr(deployment, field) for field in FIELDS_BEFORE}
    omitted: dict[str, Any] = {**dict.fromkeys(SIZING_FIELDS, None), "secret_env": {}}
    return {field: value for field, value in spec.items() if field not in omitted or value != omitted[field]}


@pytest.mark.parametrize(
    ("runtime", "protocol"), [("builtin", "openai"), ("vllm", "openai"), ("tgi", "openai"), ("triton", "v2")]
)
def test_a_spec_at_the_runtimes_protocol_hashes_as_before_protocols(runtime: str, protocol: str) -> None:
    deployment = ModelDeployment(name="chat", runtime=runtime, model="m/x", protocol=protocol, args=["--a"])

    assert deployment.revision_spec() == spec_as_made_before(deployment)
    assert spec_digest(deployment.revision_spec()) == spec_digest(spec_as_made_before(deployment))


def test_a_spec_with_another_protocol_than_the_runtimes_names_it_and_hashes_apart() -> None:
    deployment = ModelDeployment(name="ranker", runtime="builtin", model="m/r", protocol="v2")

    assert deployment.revision_spec()["protocol"] == "v2"
    assert spec_digest(deployment.revision_spec()) != spec_digest(spec_as_made_before(deployment))


@pytest.mark.parametrize(
    ("spec", "protocol"),
    [
        ({"runtime": "builtin"}, "openai"),
        ({"runtime": "triton"}, "v2"),
        ({"runtime": "builtin", "protocol": "v2"}, "v2"),
        ({}, "openai"),
    ],
)
def test_a_spec_serves_its_own_protocol_or_its_runtimes(spec: dict[str, Any], protocol: str) -> None:
    assert spec_protocol(spec) == protocol


@pytest.mark.django_db
def test_the_migration_gives_existing_triton_deployments_v2_and_the_others_openai(acme: Tenant) -> None:
    # Rows as the column's default left them when the field was added: every one "openai".
    triton = ModelDeployment.unscoped_objects.create(tenant=acme, name="recsys", runtime="triton", model="r")
    ModelDeployment.unscoped_objects.create(tenant=acme, name="chat", runtime="vllm", model="m")
    old_spec = spec_as_made_before(triton)
    Revision.unscoped_objects.create(deployment=triton, number=1, spec=old_spec, weight=100)
    migration = importlib.import_module("deployments.migrations.0008_deployment_protocol")

    migration.triton_speaks_v2(apps, None)

    protocols = dict(ModelDeployment.unscoped_objects.values_list("name", "protocol"))
    assert protocols == {"recsys": "v2", "chat": "openai"}
    triton.refresh_from_db()
    # The existing revision's spec still says what the deployment now does, and a new one would freeze the same.
    assert spec_protocol(old_spec) == triton.protocol
    assert triton.revision_spec() == old_spec
