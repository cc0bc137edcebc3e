"""Deployment pages: create (quota-aware, input kept), detail and its self-refreshing status, scale, canary, delete."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client

from deployments.models import ModelDeployment, Revision
from quotas.models import Quota
from tenants.models import AuditEvent, Tenant

NEW = {
    "name": "chat",
    "runtime": "builtin",
    "model": "frontdoor/sim-chat",
    "image": "",
    "endpoints": "",
    "gpu_type": "",
    "gpu_count": "0",
    "min_replicas": "1",
    "max_replicas": "2",
    "target_concurrency": "8",
    "timeout_s": "120",
}


@pytest.fixture
def chat(acme: Tenant, make_deployment: Callable[..., ModelDeployment]) -> ModelDeployment:
    return make_deployment(acme, "chat")


def test_it_creates_a_deployment_through_the_service(console: Callable[[User | None], Client], bob: User) -> None:
    response = console(bob).post("/t/acme/deployments/new/", NEW)
    assert response.status_code == 302 and response["Location"] == "/t/acme/deployments/chat/"
    deployment = ModelDeployment.objects.unscoped().get(name="chat")
    assert deployment.created_by_id == bob.pk and deployment.max_replicas == 2
    assert list(Revision.objects.unscoped().filter(deployment=deployment).values_list("weight", flat=True)) == [100]
    assert AuditEvent.objects.unscoped().filter(action="deployment.create", actor=bob).exists()


def test_it_shows_a_gpu_quota_refusal_on_the_gpu_field_and_keeps_the_input(
    console: Callable[[User | None], Client], bob: User, acme: Tenant
) -> None:
    Quota.objects.for_tenant(acme).update(gpus={"nvidia-h100": 2})
    asked = NEW | {"name": "big-llm", "model": "meta/llama", "gpu_type": "nvidia-h100", "gpu_count": "2"}
    response = console(bob).post("/t/acme/deployments/new/", asked)
    assert response.status_code == 422
    form = response.context["form"]
    assert "nvidia-h100 GPUs: asked 4" in form.errors["gpu_count"][0]
    assert 'value="big-llm"' in response.content.decode() and 'value="meta/llama"' in response.content.decode()
    assert not ModelDeployment.objects.for_tenant(acme).exists()


def test_it_shows_the_services_field_errors(
    console: Callable[[User | None], Client], bob: User, chat: ModelDeployment
) -> None:
    response = console(bob).post("/t/acme/deployments/new/", NEW | {"min_replicas": "3", "max_replicas": "1"})
    assert response.status_code == 422
    assert response.context["form"].errors["min_replicas"] == ["Min replicas can't be more than max replicas."]
    again = console(bob).post("/t/acme/deployments/new/", NEW)
    assert "already exists" in again.context["form"].errors["name"][0]


def test_it_polls_the_status_only_while_the_deployment_moves(
    console: Callable[[User | None], Client], vera: User, chat: ModelDeployment
) -> None:
    client = console(vera)
    page = client.get("/t/acme/deployments/chat/").content.decode()
    assert 'hx-trigger="every 2s"' in page and "<html" in page
    partial = client.get("/t/acme/deployments/chat/", HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in partial and 'id="deployment-status"' in partial and "every 2s" in partial
    ModelDeployment.objects.unscoped().filter(pk=chat.pk).update(
        status="ready", ready_replicas=1, desired_replicas=1, observed_generation=chat.generation
    )
    settled = client.get("/t/acme/deployments/chat/", HTTP_HX_REQUEST="true").content.decode()
    assert "every 2s" not in settled and "1</strong> of 1 replicas ready" in settled


def test_it_refreshes_the_revision_rows_with_the_status(
    console: Callable[[User | None], Client], vera: User, chat: ModelDeployment
) -> None:
    client = console(vera)
    page = client.get("/t/acme/deployments/chat/").content.decode()
    assert page.count('id="revision-table"') == 1 and "hx-swap-oob" not in page
    Revision.objects.unscoped().filter(deployment=chat).update(ready_replicas=1, desired_replicas=1)
    partial = client.get("/t/acme/deployments/chat/", HTTP_HX_REQUEST="true").content.decode()
    # A whole element that parses outside a table, not a bare <tbody> (which the HTML parser would drop).
    assert '<div class="table-wrap" id="revision-table" hx-swap-oob="true">' in partial
    assert "1 / 1" in partial.split('id="revision-table"', 1)[1]


def test_it_scales_within_the_quota(console: Callable[[User | None], Client], bob: User, chat: ModelDeployment) -> None:
    client = console(bob)
    assert client.post("/t/acme/deployments/chat/scale/", {"min_replicas": 0, "max_replicas": 3}).status_code == 302
    chat.refresh_from_db()
    assert (chat.min_replicas, chat.max_replicas) == (0, 3)
    refused = client.post("/t/acme/deployments/chat/scale/", {"min_replicas": 0, "max_replicas": 99})
    assert refused.status_code == 422
    assert "replicas: asked 99" in refused.context["scale_form"].errors["max_replicas"][0]


def test_it_makes_a_canary_and_moves_its_weight(
    console: Callable[[User | None], Client], bob: User, chat: ModelDeployment
) -> None:
    client = console(bob)
    made = client.post(
        "/t/acme/deployments/chat/revision/",
        {"rev-model": "frontdoor/sim-chat-v2", "rev-image": "", "rev-canary_weight": 10},
    )
    assert made.status_code == 302
    weights = dict(Revision.objects.unscoped().filter(deployment=chat).values_list("number", "weight"))
    assert weights == {1: 90, 2: 10}
    assert client.post("/t/acme/deployments/chat/traffic/", {"canary_weight": 60}).status_code == 302
    weights = dict(Revision.objects.unscoped().filter(deployment=chat).values_list("number", "weight"))
    assert weights == {1: 40, 2: 60}
    bad = client.post("/t/acme/deployments/chat/traffic/", {"canary_weight": 140})
    assert bad.status_code == 422 and bad.context["canary_form"].errors["canary_weight"]


def test_it_deletes_only_after_the_name_is_typed(
    console: Callable[[User | None], Client], bob: User, chat: ModelDeployment
) -> None:
    client = console(bob)
    assert "Type <strong>chat</strong>" in client.get("/t/acme/deployments/chat/delete/").content.decode()
    assert client.post("/t/acme/deployments/chat/delete/", {"confirm_name": "nope"}).status_code == 422
    chat.refresh_from_db()
    assert chat.desired_state == "running"
    assert client.post("/t/acme/deployments/chat/delete/", {"confirm_name": "chat"}).status_code == 302
    chat.refresh_from_db()
    assert chat.desired_state == "deleting"


def test_it_filters_the_list(
    console: Callable[[User | None], Client], vera: User, acme: Tenant, make_deployment: Callable[..., ModelDeployment]
) -> None:
    Quota.objects.for_tenant(acme).update(max_deployments=5, max_replicas=10)
    make_deployment(acme, "chat-a")
    make_deployment(acme, "embed-b", model="minilm")
    client = console(vera)
    names = [d.name for d in client.get("/t/acme/deployments/?q=embed").context["page"]]
    assert names == ["embed-b"]
    partial = client.get("/t/acme/deployments/?q=chat", HTTP_HX_REQUEST="true")
    assert "<html" not in partial.content.decode() and [d.name for d in partial.context["page"]] == ["chat-a"]
    assert "No deployment matches" in client.get("/t/acme/deployments/?status=degraded").content.decode()


def test_it_previews_the_manifests(console: Callable[[User | None], Client], vera: User, chat: ModelDeployment) -> None:
    partial = console(vera).get("/t/acme/deployments/chat/manifests/", HTTP_HX_REQUEST="true").content.decode()
    assert "kind: Deployment" in partial and "frontdoor.dev/deployment" in partial and "<html" not in partial


def test_it_shows_an_empty_state_that_says_what_to_do(
    console: Callable[[User | None], Client], bob: User, vera: User
) -> None:
    assert "Create your first deployment" in console(bob).get("/t/acme/").content.decode()
    assert "Ask a member" in console(vera).get("/t/acme/").content.decode()
