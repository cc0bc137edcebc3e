"""The deployments REST API: every endpoint's happy path, roles, tenant isolation and the on-commit reconcile."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from rest_framework.test import APIClient

from controlplane.access import Principal
from deployments import network, services
from deployments.models import DeploymentEvent, ModelDeployment, Revision
from tenants.models import ApiKey, AuditEvent, Role, Scope, Tenant

pytestmark = pytest.mark.django_db

BASE = "/api/v1/tenants/acme/deployments/"


def url(suffix: str = "", tenant: str = "acme") -> str:
    return f"/api/v1/tenants/{tenant}/deployments/{suffix}"


def owner_of(tenant: Tenant, user: User) -> Principal:
    return Principal(user_id=user.pk, api_key=None, role=Role.OWNER, is_staff=False)


@pytest.fixture
def chat(acme: Tenant, alice: User) -> ModelDeployment:
    """A deployment in acme, made the way the API makes it."""
    return services.create_deployment(
        acme,
        {"name": "chat", "runtime": "vllm", "model": "m/chat", "gpu_type": "nvidia-h100", "gpu_count": 1},
        actor=owner_of(acme, alice),
    )


# --- create ---------------------------------------------------------------------------------------------------


def test_it_creates_a_deployment_with_a_first_revision_taking_all_traffic(
    api: Callable[..., APIClient], bob: User, acme: Tenant, deployment_payload: Callable[..., dict[str, Any]]
) -> None:
    response = api(bob).post(BASE, deployment_payload(), format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["name"] == "chat-small"
    assert body["tenant"] == "acme"
    assert body["status"] == "pending"
    assert body["generation"] == 1
    assert body["desired_replicas"] == 1
    assert body["traffic"] == [{"revision": "r1", "weight": 100}]
    assert body["latest_revision"] == 1
    assert body["created_by"] == bob.pk
    deployment = ModelDeployment.objects.for_tenant(acme).get(name="chat-small")
    revision = Revision.objects.for_tenant(acme).get(deployment=deployment)
    assert revision.spec == deployment.revision_spec()
    assert AuditEvent.objects.for_tenant(acme).filter(action="deployment.create", actor=bob).count() == 1


def test_it_ignores_ownership_and_status_fields_in_the_payload(
    api: Callable[..., APIClient],
    bob: User,
    alice: User,
    acme: Tenant,
    globex: Tenant,
    deployment_payload: Callable[..., dict[str, Any]],
) -> None:
    payload = deployment_payload(
        tenant="globex",
        created_by=alice.pk,
        status="ready",
        ready_replicas=7,
        generation=99,
        observed_generation=99,
        conditions=[{"type": "Ready", "status": "True"}],
        desired_replicas=5,
    )

    response = api(bob).post(BASE, payload, format="json")

    assert response.status_code == 201, response.json()
    deployment = ModelDeployment.objects.unscoped().get(name="chat-small")
    assert deployment.tenant_id == acme.pk
    assert deployment.created_by_id == bob.pk
    assert (deployment.status, deployment.ready_replicas, deployment.generation) == ("pending", 0, 1)
    assert deployment.observed_generation == 0
    assert deployment.conditions == []
    assert deployment.desired_replicas == 1
    assert not ModelDeployment.objects.for_tenant(globex).exists()


def test_it_starts_desired_replicas_at_min_or_one(
    api: Callable[..., APIClient], bob: User, acme: Tenant, deployment_payload: Callable[..., dict[str, Any]]
) -> None:
    zero = api(bob).post(BASE, deployment_payload(name="zero", min_replicas=0, max_replicas=2), format="json")
    three = api(bob).post(
        BASE, deployment_payload(name="three", gpu_count=0, gpu_type="", min_replicas=3, max_replicas=4), format="json"
    )

    assert zero.json()["desired_replicas"] == 1
    assert three.json()["desired_replicas"] == 3


def test_it_creates_an_external_deployment_with_endpoints(
    api: Callable[..., APIClient], bob: User, acme: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The name resolves (here, without a lookup) to a public address, which the address policy admits.
    monkeypatch.setattr(network, "resolve_host", lambda host, port: ["93.184.215.14"])
    payload = {"name": "ext", "runtime": "external", "model": "gpt-x", "endpoints": ["https://api.example.com/v1"]}

    response = api(bob).post(BASE, payload, format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["endpoints"] == ["https://api.example.com/v1"]


# --- list, filter, order, paginate ------------------------------------------------------------------------------


@pytest.fixture
def three_deployments(acme: Tenant, alice: User) -> list[ModelDeployment]:
    principal = owner_of(acme, alice)
    made = [
        services.create_deployment(
            acme,
            {"name": "alpha-chat", "runtime": "vllm", "model": "m", "gpu_type": "nvidia-h100", "gpu_count": 1},
            actor=principal,
        ),
        services.create_deployment(acme, {"name": "beta-embed", "runtime": "builtin", "model": "m"}, actor=principal),
        services.create_deployment(
            acme,
            {"name": "gamma-chat", "runtime": "tgi", "model": "m", "gpu_type": "nvidia-l4", "gpu_count": 1},
            actor=principal,
        ),
    ]
    ModelDeployment.objects.for_tenant(acme).filter(name="gamma-chat").update(status="ready")
    return made


def names(response: Any) -> list[str]:
    return [item["name"] for item in response.json()["results"]]


def test_it_lists_the_tenants_deployments_only(
    api: Callable[..., APIClient], vera: User, charlie: User, globex: Tenant, three_deployments: Any
) -> None:
    services.create_deployment(globex, {"name": "theirs", "model": "m"}, actor=owner_of(globex, charlie))

    response = api(vera).get(BASE)

    assert response.status_code == 200
    assert response.json()["count"] == 3
    assert names(response) == ["alpha-chat", "beta-embed", "gamma-chat"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=ready", ["gamma-chat"]),
        ("status=pending&status=ready", ["alpha-chat", "beta-embed", "gamma-chat"]),
        ("runtime=builtin", ["beta-embed"]),
        ("gpu_type=nvidia-l4", ["gamma-chat"]),
        ("name=CHAT", ["alpha-chat", "gamma-chat"]),
        ("ordering=-name", ["gamma-chat", "beta-embed", "alpha-chat"]),
    ],
)
def test_it_filters_and_orders_the_list(
    api: Callable[..., APIClient], vera: User, three_deployments: Any, query: str, expected: list[str]
) -> None:
    response = api(vera).get(f"{BASE}?{query}")

    assert response.status_code == 200
    assert names(response) == expected


def test_it_paginates_the_list(api: Callable[..., APIClient], vera: User, three_deployments: Any) -> None:
    first = api(vera).get(f"{BASE}?page_size=2").json()
    second = api(vera).get(f"{BASE}?page_size=2&page=2").json()

    assert first["count"] == 3
    assert len(first["results"]) == 2
    assert first["next"] is not None
    assert [d["name"] for d in first["results"] + second["results"]] == ["alpha-chat", "beta-embed", "gamma-chat"]


def test_it_refuses_an_unknown_status_filter(api: Callable[..., APIClient], vera: User, three_deployments: Any) -> None:
    response = api(vera).get(f"{BASE}?status=bogus")

    assert response.status_code == 400
    assert "status" in response.json()["error"]["fields"]


# --- retrieve, update, delete -----------------------------------------------------------------------------------


def test_it_retrieves_a_deployment_by_name(api: Callable[..., APIClient], vera: User, chat: ModelDeployment) -> None:
    response = api(vera).get(url("chat/"))

    assert response.status_code == 200
    assert response.json()["id"] == chat.pk
    assert response.json()["model"] == "m/chat"


def test_it_updates_non_spec_fields_without_a_new_revision(
    api: Callable[..., APIClient], bob: User, chat: ModelDeployment
) -> None:
    response = api(bob).patch(url("chat/"), {"timeout_s": 30, "target_concurrency": 4}, format="json")

    assert response.status_code == 200, response.json()
    chat.refresh_from_db()
    assert (chat.timeout_s, chat.target_concurrency, chat.generation) == (30, 4, 2)
    assert chat.revisions.count() == 1


def test_it_changes_nothing_when_a_patch_repeats_the_current_values(
    api: Callable[..., APIClient], bob: User, chat: ModelDeployment
) -> None:
    response = api(bob).patch(url("chat/"), {"model": "m/chat", "timeout_s": chat.timeout_s}, format="json")

    assert response.status_code == 200
    chat.refresh_from_db()
    assert chat.generation == 1
    assert not AuditEvent.objects.for_tenant(chat.tenant_id).filter(action="deployment.update").exists()


def test_it_can_stop_a_deployment(api: Callable[..., APIClient], bob: User, chat: ModelDeployment) -> None:
    response = api(bob).patch(url("chat/"), {"desired_state": "stopped"}, format="json")

    assert response.status_code == 200
    assert response.json()["desired_state"] == "stopped"


def test_it_refuses_to_rename(api: Callable[..., APIClient], bob: User, chat: ModelDeployment) -> None:
    response = api(bob).patch(url("chat/"), {"name": "other"}, format="json")

    assert response.status_code == 400
    assert "name" in response.json()["error"]["fields"]


def test_it_marks_a_deployment_deleting_and_deleting_twice_is_fine(
    api: Callable[..., APIClient], bob: User, chat: ModelDeployment
) -> None:
    first = api(bob).delete(url("chat/"))
    second = api(bob).delete(url("chat/"))

    assert first.status_code == 202
    assert second.status_code == 202
    assert first.json()["status"] == "deleting"
    chat.refresh_from_db()
    assert (chat.desired_state, chat.status, chat.generation) == ("deleting", "deleting", 2)
    assert AuditEvent.objects.for_tenant(chat.tenant_id).filter(action="deployment.delete").count() == 1


def test_it_refuses_changes_to_a_deployment_being_deleted(
    api: Callable[..., APIClient], bob: User, chat: ModelDeployment
) -> None:
    api(bob).delete(url("chat/"))

    patch = api(bob).patch(url("chat/"), {"timeout_s": 5}, format="json")
    scale = api(bob).post(url("chat/scale/"), {"max_replicas": 2}, format="json")

    assert patch.status_code == 409
    assert patch.json()["error"]["code"] == "deployment_deleting"
    assert scale.status_code == 409


# --- scale ------------------------------------------------------------------------------------------------------


def test_it_scales_within_the_quota(api: Callable[..., APIClient], bob: User, chat: ModelDeployment) -> None:
    response = api(bob).post(url("chat/scale/"), {"min_replicas": 2, "max_replicas": 4}, format="json")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["min_replicas"], body["max_replicas"], body["desired_replicas"]) == (2, 4, 2)
    assert body["generation"] == 2
    assert DeploymentEvent.objects.for_tenant(chat.tenant_id).filter(deployment=chat, reason="Scaled").exists()


def test_it_keeps_desired_replicas_within_new_bounds(
    api: Callable[..., APIClient], bob: User, chat: ModelDeployment
) -> None:
    ModelDeployment.objects.for_tenant(chat.tenant_id).filter(pk=chat.pk).update(max_replicas=4, desired_replicas=4)

    response = api(bob).post(url("chat/scale/"), {"max_replicas": 2}, format="json")

    assert response.status_code == 200
    assert response.json()["desired_replicas"] == 2


def test_it_refuses_inverted_scale_bounds(api: Callable[..., APIClient], bob: User, chat: ModelDeployment) -> None:
    response = api(bob).post(url("chat/scale/"), {"min_replicas": 3}, format="json")

    assert response.status_code == 400
    assert "min_replicas" in response.json()["error"]["fields"]


# --- roles and isolation ----------------------------------------------------------------------------------------


def test_viewers_read_but_cannot_change(
    api: Callable[..., APIClient], vera: User, chat: ModelDeployment, deployment_payload: Callable[..., Any]
) -> None:
    client = api(vera)

    assert client.get(url("chat/")).status_code == 200
    assert client.post(BASE, deployment_payload(name="new"), format="json").status_code == 403
    assert client.patch(url("chat/"), {"timeout_s": 5}, format="json").status_code == 403
    assert client.post(url("chat/scale/"), {"max_replicas": 2}, format="json").status_code == 403
    assert client.post(url("chat/traffic/"), {"weights": {"r1": 100}}, format="json").status_code == 403
    assert client.delete(url("chat/")).status_code == 403
    assert ModelDeployment.objects.for_tenant(chat.tenant_id).count() == 1


def test_an_api_key_with_manage_scope_can_create(
    api: Callable[..., APIClient], acme: Tenant, deployment_payload: Callable[..., Any]
) -> None:
    _key, full = ApiKey.issue(tenant=acme, name="ci", scopes=[Scope.MANAGE])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {full}")

    response = client.post(BASE, deployment_payload(), format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["created_by"] is None


def test_an_api_key_with_read_scope_cannot_create(
    acme: Tenant, chat: ModelDeployment, deployment_payload: Callable[..., Any]
) -> None:
    _key, full = ApiKey.issue(tenant=acme, name="ro", scopes=[Scope.READ])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {full}")

    assert client.get(url("chat/")).status_code == 200
    assert client.post(BASE, deployment_payload(name="other"), format="json").status_code == 403


ROUTES = [
    ("get", ""),
    ("post", ""),
    ("get", "chat/"),
    ("patch", "chat/"),
    ("delete", "chat/"),
    ("post", "chat/scale/"),
    ("post", "chat/traffic/"),
    ("get", "chat/revisions/"),
    ("get", "chat/revisions/1/"),
    ("get", "chat/events/"),
]


@pytest.mark.parametrize(("method", "suffix"), ROUTES)
def test_outsiders_get_404_on_every_route(
    api: Callable[..., APIClient], charlie: User, chat: ModelDeployment, method: str, suffix: str
) -> None:
    before = ModelDeployment.objects.unscoped().values_list("generation", "status").get(pk=chat.pk)

    response = getattr(api(charlie), method)(url(suffix), {"max_replicas": 1}, format="json")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert ModelDeployment.objects.unscoped().values_list("generation", "status").get(pk=chat.pk) == before


@pytest.mark.parametrize(("method", "suffix"), ROUTES)
def test_anonymous_callers_are_refused_on_every_route(
    api: Callable[..., APIClient], chat: ModelDeployment, method: str, suffix: str
) -> None:
    response = getattr(api(None), method)(url(suffix), {}, format="json")

    assert response.status_code in {401, 403}


@pytest.mark.parametrize(("method", "suffix"), [("get", "chat/"), ("get", "chat/revisions/"), ("get", "chat/events/")])
def test_an_unknown_deployment_is_404(
    api: Callable[..., APIClient], vera: User, chat: ModelDeployment, method: str, suffix: str
) -> None:
    response = getattr(api(vera), method)(url(suffix.replace("chat", "nope")))

    assert response.status_code == 404


def test_staff_can_read_any_tenant(api: Callable[..., APIClient], staff: User, chat: ModelDeployment) -> None:
    assert api(staff).get(url("chat/")).status_code == 200


# --- on-commit reconcile ------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_enqueues_a_reconcile_on_the_broker_after_commit(
    api: Callable[..., APIClient], bob: User, broker: Any, deployment_payload: Callable[..., Any]
) -> None:
    created = api(bob).post(BASE, deployment_payload(), format="json").json()
    api(bob).post(url("chat-small/scale/"), {"max_replicas": 3}, format="json")
    api(bob).post(url("chat-small/traffic/"), {"weights": {"r1": 100}}, format="json")  # no change: no reconcile
    api(bob).delete(url("chat-small/"))

    assert broker.reconcile_ids() == [created["id"]] * 3


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_change_enqueues_nothing(acme: Tenant, alice: User, broker: Any) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        services.create_deployment(acme, {"name": "doomed", "model": "m"}, actor=owner_of(acme, alice))
        raise RuntimeError("the caller's transaction fails after the service returned")

    assert broker.reconcile_ids() == []
    assert not ModelDeployment.objects.for_tenant(acme).exists()


@pytest.mark.django_db(transaction=True)
def test_a_broker_that_is_down_is_logged_not_fatal(
    api: Callable[..., APIClient],
    bob: User,
    deployment_payload: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from controlplane.celery import app

    def reset_broker_pools() -> None:
        # Connection and producer pools are cached on the app and in kombu's process-wide registry: drop all.
        from kombu import pools

        app.pool.force_close_all()
        pools.reset()
        app._pool = None
        app.amqp._producer_pool = None

    real_url = app.conf.broker_url
    reset_broker_pools()
    app.conf.broker_url = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    try:
        with caplog.at_level(logging.ERROR, logger="deployments.reconcile.enqueue"):
            response = api(bob).post(BASE, deployment_payload(), format="json")
    finally:
        app.conf.broker_url = real_url
        reset_broker_pools()

    assert response.status_code == 201
    assert ModelDeployment.objects.unscoped().filter(name="chat-small").exists()
    assert any("could not enqueue" in record.getMessage() for record in caplog.records)


def test_a_create_retried_with_the_same_idempotency_key_creates_once(
    api: Callable[..., APIClient], bob: User, acme: Tenant, deployment_payload: Callable[..., Any]
) -> None:
    client = api(bob)
    headers = {"Idempotency-Key": "create-chat-small-1"}

    first = client.post(BASE, deployment_payload(), format="json", headers=headers)
    again = client.post(BASE, deployment_payload(), format="json", headers=headers)

    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert ModelDeployment.objects.for_tenant(acme).count() == 1
