"""A deployment's pod sizing through the REST API: defaults in the answer, round trips, revisions, refusals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from controlplane.domain_errors import Invalid
from deployments import services
from deployments.models import ModelDeployment, Revision, spec_digest
from deployments.sizing import SIZING_FIELDS, default_sizing
from tenants.models import Tenant
from tests.support.rows import deployment_row_counts

pytestmark = pytest.mark.django_db

BASE = "/api/v1/tenants/acme/deployments/"
Api = Callable[[User | None], APIClient]
Payload = Callable[..., dict[str, Any]]


def revisions(acme: Tenant, name: str) -> list[Revision]:
    return list(Revision.objects.for_tenant(acme).filter(deployment__name=name).order_by("number"))


def test_it_answers_the_defaults_for_the_runtime_and_gpu_count_when_nothing_is_set(
    api: Api, bob: User, acme: Tenant, deployment_payload: Payload
) -> None:
    response = api(bob).post(BASE, deployment_payload(gpu_count=4), format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert all(body[name] is None for name in SIZING_FIELDS)
    assert body["sizing"] == {
        "cpu_cores": 16.0,
        "memory_gib": 104.0,
        "shm_gib": 8.0,
        "ephemeral_storage_gib": 20.0,
        "startup_timeout_s": 1800,
    }
    assert body["sizing"] == default_sizing("vllm", 4).__dict__
    # Defaults are absent from the spec, so revisions made before sizing existed freeze the same spec.
    assert not set(SIZING_FIELDS) & set(revisions(acme, "chat-small")[0].spec)


def test_sizing_round_trips_through_post_and_patch_and_reaches_the_revision_spec(
    api: Api, bob: User, acme: Tenant, deployment_payload: Payload
) -> None:
    client = api(bob)
    chosen = {"cpu_cores": 6, "memory_gib": 40.5, "shm_gib": 4, "ephemeral_storage_gib": 50, "startup_timeout_s": 2400}

    created = client.post(BASE, deployment_payload(**chosen), format="json")

    assert created.status_code == 201, created.json()
    assert {name: created.json()[name] for name in SIZING_FIELDS} == chosen
    assert created.json()["sizing"] == {**chosen, "cpu_cores": 6.0, "shm_gib": 4.0, "ephemeral_storage_gib": 50.0}
    first = revisions(acme, "chat-small")[0]
    assert {name: first.spec[name] for name in SIZING_FIELDS} == chosen
    read = client.get(f"{BASE}chat-small/").json()
    assert {name: read[name] for name in SIZING_FIELDS} == chosen

    patched = client.patch(f"{BASE}chat-small/", {"cpu_cores": None, "startup_timeout_s": 900}, format="json")

    assert patched.status_code == 200, patched.json()
    assert patched.json()["cpu_cores"] is None
    assert patched.json()["sizing"]["cpu_cores"] == default_sizing("vllm", 1).cpu_cores
    assert patched.json()["startup_timeout_s"] == 900
    newest = revisions(acme, "chat-small")[-1]
    assert newest.number == 2
    assert "cpu_cores" not in newest.spec
    assert newest.spec["startup_timeout_s"] == 900


def test_a_patch_of_memory_makes_a_new_revision_that_takes_the_traffic(
    api: Api, bob: User, acme: Tenant, deployment_payload: Payload
) -> None:
    client = api(bob)
    assert client.post(BASE, deployment_payload(), format="json").status_code == 201

    response = client.patch(f"{BASE}chat-small/", {"memory_gib": 48}, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()["latest_revision"] == 2
    assert response.json()["traffic"] == [{"revision": "r2", "weight": 100}]
    r1, r2 = revisions(acme, "chat-small")
    assert "memory_gib" not in r1.spec
    assert r2.spec["memory_gib"] == 48
    assert r1.spec_hash != r2.spec_hash


def test_a_patch_that_sets_the_same_sizing_again_makes_no_revision(
    api: Api, bob: User, acme: Tenant, deployment_payload: Payload
) -> None:
    client = api(bob)
    assert client.post(BASE, deployment_payload(memory_gib=30), format="json").status_code == 201

    response = client.patch(f"{BASE}chat-small/", {"memory_gib": 30.0, "shm_gib": None}, format="json")

    assert response.status_code == 200
    assert response.json()["latest_revision"] == 1


def test_a_deployment_made_before_sizing_existed_keeps_its_revision(acme: Tenant) -> None:
    deployment = services.create_deployment(
        acme, {"name": "old", "runtime": "builtin", "model": "frontdoor/sim-chat"}, actor=None
    )
    legacy_spec = {field: value for field, value in deployment.revision_spec().items() if field not in SIZING_FIELDS}
    revision = revisions(acme, "old")[0]

    assert revision.spec == legacy_spec == deployment.revision_spec()
    assert revision.spec_hash == spec_digest(legacy_spec)
    services.update_deployment(deployment, {"timeout_s": 60}, actor=None)  # not a pod change
    assert len(revisions(acme, "old")) == 1


BAD_SIZING = [
    ({"cpu_cores": -1}, "cpu_cores"),
    ({"cpu_cores": 0}, "cpu_cores"),
    ({"cpu_cores": 1e9}, "cpu_cores"),
    ({"cpu_cores": "4"}, "cpu_cores"),
    ({"cpu_cores": True}, "cpu_cores"),
    ({"cpu_cores": [4]}, "cpu_cores"),
    ({"memory_gib": -24}, "memory_gib"),
    ({"memory_gib": 10**30}, "memory_gib"),
    ({"memory_gib": 10**400}, "memory_gib"),
    ({"memory_gib": "24Gi"}, "memory_gib"),
    ({"memory_gib": False}, "memory_gib"),
    ({"shm_gib": 0}, "shm_gib"),
    ({"shm_gib": 5000}, "shm_gib"),
    ({"shm_gib": {"size": 1}}, "shm_gib"),
    ({"ephemeral_storage_gib": 0.5}, "ephemeral_storage_gib"),
    ({"ephemeral_storage_gib": 2**63}, "ephemeral_storage_gib"),
    ({"ephemeral_storage_gib": "20"}, "ephemeral_storage_gib"),
    ({"startup_timeout_s": 29}, "startup_timeout_s"),
    ({"startup_timeout_s": 7201}, "startup_timeout_s"),
    ({"startup_timeout_s": 2**31}, "startup_timeout_s"),
    ({"startup_timeout_s": 60.5}, "startup_timeout_s"),
    ({"startup_timeout_s": "600"}, "startup_timeout_s"),
    ({"startup_timeout_s": True}, "startup_timeout_s"),
    ({"memory_gib": 16, "shm_gib": 16}, "shm_gib"),
    ({"memory_gib": 16, "shm_gib": 20}, "shm_gib"),
    ({"shm_gib": 100}, "shm_gib"),  # above the default memory for one GPU (26 GiB)
    ({"memory_gib": 1}, "memory_gib"),  # below the default shared memory for one GPU (2 GiB)
]


def _refused(response: Any, field: str) -> None:
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    assert field in error["fields"], error
    assert error["fields"][field]


@pytest.mark.parametrize(("overrides", "field"), BAD_SIZING)
def test_it_refuses_bad_sizing_and_writes_nothing(
    api: Api, bob: User, deployment_payload: Payload, overrides: dict[str, Any], field: str
) -> None:
    before = deployment_row_counts()

    _refused(api(bob).post(BASE, deployment_payload(**overrides), format="json"), field)

    assert deployment_row_counts() == before


@pytest.mark.parametrize(("overrides", "field"), BAD_SIZING)
def test_a_patch_with_bad_sizing_changes_nothing(
    api: Api, bob: User, acme: Tenant, deployment_payload: Payload, overrides: dict[str, Any], field: str
) -> None:
    client = api(bob)
    assert client.post(BASE, deployment_payload(), format="json").status_code == 201
    deployment = ModelDeployment.objects.for_tenant(acme).get(name="chat-small")
    before = (deployment_row_counts(), deployment.generation)

    _refused(client.patch(f"{BASE}chat-small/", overrides, format="json"), field)

    deployment.refresh_from_db()
    assert (deployment_row_counts(), deployment.generation) == before
    assert all(getattr(deployment, name) is None for name in SIZING_FIELDS)


def test_shared_memory_must_stay_below_memory(api: Api, bob: User, deployment_payload: Payload) -> None:
    response = api(bob).post(BASE, deployment_payload(memory_gib=8, shm_gib=8), format="json")

    _refused(response, "shm_gib")
    assert "shared memory is counted against the container's memory" in response.json()["error"]["fields"]["shm_gib"][0]
    accepted = api(bob).post(BASE, deployment_payload(memory_gib=8, shm_gib=7.5), format="json")
    assert accepted.status_code == 201, accepted.json()


def test_an_external_deployment_takes_no_sizing(api: Api, bob: User, deployment_payload: Payload) -> None:
    payload = deployment_payload(
        runtime="external", gpu_type="", gpu_count=0, endpoints=["https://api.example.com/v1"], cpu_cores=2
    )

    _refused(api(bob).post(BASE, payload, format="json"), "cpu_cores")


def test_the_model_refuses_what_the_console_could_send(acme: Tenant) -> None:
    deployment = ModelDeployment(tenant=acme, name="x", model="m", runtime="tgi", gpu_type="nvidia-l4", gpu_count=1)
    deployment.memory_gib = 1.0

    with pytest.raises(Invalid) as refused:
        services.validate_deployment(deployment)

    assert "memory_gib" in refused.value.fields


def test_the_schema_describes_the_sizing_fields_and_the_effective_sizing() -> None:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    components = schema["components"]["schemas"]
    deployment = components["Deployment"]["properties"]
    assert deployment["memory_gib"]["nullable"] is True
    assert deployment["memory_gib"]["minimum"] == 0.25
    assert deployment["startup_timeout_s"]["type"] == "integer"
    assert deployment["sizing"]["readOnly"] is True
    assert set(components["Sizing"]["properties"]) == set(SIZING_FIELDS)


# --- the console: the same fields, the same rules -----------------------------------------------------------------

NEW = {
    "name": "chat",
    "runtime": "vllm",
    "model": "m/chat",
    "image": "",
    "endpoints": "",
    "gpu_type": "nvidia-h100",
    "gpu_count": "4",
    "min_replicas": "1",
    "max_replicas": "1",
    "target_concurrency": "8",
    "timeout_s": "120",
}


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_console_shows_the_defaults_as_placeholders_and_creates_with_blank_sizing(
    bob: User, acme: Tenant, redis_prefix: str
) -> None:
    client = signed_in(bob)
    badly_named = client.post("/t/acme/deployments/new/", NEW | {"name": "70b-chat"})
    assert badly_named.status_code == 422
    assert "must start with a letter" in badly_named.context["form"].errors["name"][0]
    too_small = client.post("/t/acme/deployments/new/", NEW | {"memory_gib": "-1"})
    assert too_small.status_code == 422
    assert "memory_gib" in too_small.context["form"].errors
    assert 'placeholder="104"' in too_small.content.decode()  # vllm on 4 GPUs: 24 GiB each + 8 GiB shared memory
    assert not ModelDeployment.objects.for_tenant(acme).exists()

    made = client.post("/t/acme/deployments/new/", NEW | {"shm_gib": "16", "cpu_cores": ""})

    assert made.status_code == 302, made.context and made.context["form"].errors
    deployment = ModelDeployment.objects.for_tenant(acme).get(name="chat")
    assert deployment.shm_gib == 16 and deployment.cpu_cores is None
    assert revisions(acme, "chat")[0].spec["shm_gib"] == 16
    page = client.get("/t/acme/deployments/chat/").content.decode()
    assert "<dt>Shared memory</dt><dd>16 GiB</dd>" in page
    assert '<dt>CPU cores</dt><dd>16 <span class="muted">(default)</span></dd>' in page


def test_the_console_makes_a_new_revision_when_the_sizing_changes(bob: User, acme: Tenant, redis_prefix: str) -> None:
    client = signed_in(bob)
    assert client.post("/t/acme/deployments/new/", NEW).status_code == 302
    revision_form = {"rev-model": "m/chat", "rev-image": "", "rev-canary_weight": "100"}

    refused = client.post("/t/acme/deployments/chat/revision/", revision_form | {"rev-shm_gib": "200"})
    assert refused.status_code == 422
    assert "shm_gib" in refused.context["revision_form"].errors
    assert len(revisions(acme, "chat")) == 1

    made = client.post("/t/acme/deployments/chat/revision/", revision_form | {"rev-memory_gib": "200"})

    assert made.status_code == 302
    assert [r.spec.get("memory_gib") for r in revisions(acme, "chat")] == [None, 200]
