"""The deployment models: fail-closed managers, constraints, clean(), revisions, conditions, events."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from rest_framework import serializers

from controlplane.scoping import UnscopedQueryError
from deployments.api.serializers import DeploymentSerializer
from deployments.models import DeploymentEvent, ModelDeployment, Revision, spec_digest
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


def deployment(tenant: Tenant, name: str = "chat", **fields: object) -> ModelDeployment:
    return ModelDeployment.unscoped_objects.create(tenant=tenant, name=name, model="m", **fields)


@pytest.mark.parametrize("model", [ModelDeployment, Revision, DeploymentEvent])
def test_the_default_manager_refuses_unscoped_queries(model: type) -> None:
    with pytest.raises(UnscopedQueryError):
        list(model.objects.all())


def test_for_tenant_sees_only_that_tenants_rows(acme: Tenant, globex: Tenant) -> None:
    mine = deployment(acme)
    deployment(globex)
    Revision.unscoped_objects.create(deployment=mine, number=1, spec=mine.revision_spec(), weight=100)

    assert list(ModelDeployment.objects.for_tenant(acme)) == [mine]
    assert [r.deployment_id for r in Revision.objects.for_tenant(acme)] == [mine.pk]
    assert not Revision.objects.for_tenant(globex).exists()


def test_names_are_unique_per_tenant_in_the_database(acme: Tenant, globex: Tenant) -> None:
    deployment(acme)
    deployment(globex)

    with pytest.raises(IntegrityError), transaction.atomic():
        deployment(acme)


def test_the_database_refuses_min_above_max(acme: Tenant) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        deployment(acme, min_replicas=3, max_replicas=2)


def test_the_database_refuses_gpus_without_a_type(acme: Tenant) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        deployment(acme, gpu_count=1, gpu_type="")


def test_clean_names_each_bad_field(acme: Tenant) -> None:
    bad = ModelDeployment(tenant=acme, name="x", model="m", min_replicas=5, max_replicas=1, runtime="external")

    with pytest.raises(ValidationError) as refused:
        bad.clean()

    assert set(refused.value.message_dict) == {"min_replicas", "endpoints"}


def test_clean_refuses_an_unknown_gpu_type(acme: Tenant) -> None:
    with pytest.raises(ValidationError) as refused:
        ModelDeployment(tenant=acme, name="x", model="m", gpu_type="tpu-v5", gpu_count=1).clean()

    assert "unknown GPU type" in refused.value.message_dict["gpu_type"][0]


def test_clean_and_the_api_refuse_an_unknown_gpu_type_in_the_same_words(acme: Tenant) -> None:
    with pytest.raises(ValidationError) as refused:
        ModelDeployment(tenant=acme, name="x", model="m", gpu_type="tpu-v5", gpu_count=1).clean()
    with pytest.raises(serializers.ValidationError) as refused_by_api:
        DeploymentSerializer().validate_gpu_type("tpu-v5")

    words = f"unknown GPU type 'tpu-v5'; known: {', '.join(settings.FRONTDOOR_GPU_TYPES)}"
    assert refused.value.message_dict["gpu_type"] == [words]
    assert [str(detail) for detail in refused_by_api.value.detail] == [words]


def test_revision_spec_freezes_the_spec_fields_only(acme: Tenant) -> None:
    made = deployment(acme, runtime="vllm", args=["--x"], env={"A": "1"}, timeout_s=30)

    spec = made.revision_spec()

    assert spec == {
        "runtime": "vllm",
        "model": "m",
        "image": "",
        "args": ["--x"],
        "env": {"A": "1"},
        "gpu_type": "",
        "gpu_count": 0,
    }


def test_a_revision_hashes_its_spec_and_keeps_it_immutable(acme: Tenant) -> None:
    made = deployment(acme)
    revision = Revision.unscoped_objects.create(deployment=made, number=1, spec=made.revision_spec())

    assert revision.spec_hash == spec_digest(made.revision_spec())
    assert revision.name == "r1"
    revision.weight = 40
    revision.save()  # the weight may change
    revision.spec = {"model": "other"}
    with pytest.raises(ValidationError):
        revision.save()


def test_revision_numbers_are_unique_per_deployment(acme: Tenant) -> None:
    made = deployment(acme)
    Revision.unscoped_objects.create(deployment=made, number=1, spec={})

    with pytest.raises(IntegrityError), transaction.atomic():
        Revision.unscoped_objects.create(deployment=made, number=1, spec={})


def test_set_condition_reports_changes_and_keeps_transition_times(acme: Tenant) -> None:
    made = deployment(acme)

    assert made.set_condition("Ready", False, "Starting") is True
    first_time = made.conditions[0]["lastTransitionTime"]
    assert made.set_condition("Ready", False, "Starting") is False
    assert made.set_condition("Ready", False, "Pulling", "pulling image") is True
    assert made.conditions[0]["lastTransitionTime"] == first_time
    assert made.set_condition("Ready", True, "Ready") is True
    assert len(made.conditions) == 1
    assert made.conditions[0]["status"] == "True"


def test_events_record_warnings_in_the_deployments_tenant(acme: Tenant) -> None:
    made = deployment(acme)

    DeploymentEvent.record(made, "Unschedulable", "no nvidia-h100 free", warning=True)

    event = DeploymentEvent.objects.for_tenant(acme).get()
    assert (event.kind, event.reason, event.deployment_id) == ("Warning", "Unschedulable", made.pk)


def test_gpus_per_replica_is_zero_without_a_type(acme: Tenant) -> None:
    assert deployment(acme, name="cpu").gpus_per_replica == 0
    assert deployment(acme, name="gpu", gpu_type="nvidia-l4", gpu_count=2).gpus_per_replica == 2
