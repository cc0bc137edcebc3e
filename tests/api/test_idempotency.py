"""``Idempotency-Key`` on POST: replay the first result, never execute twice, refuse a reused key."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from rest_framework.test import APIClient

from tenants.models import ApiKey, AuditEvent, IdempotencyRecord, Tenant

pytestmark = pytest.mark.django_db

Api = Callable[[User | None], APIClient]
KEYS = "/api/v1/tenants/acme/keys/"


def post(client: APIClient, body: Any, key: str, url: str = KEYS) -> Any:
    return client.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_the_same_key_and_body_replay_the_first_result(api: Api, adam: User, acme: Tenant) -> None:
    client = api(adam)
    first = post(client, {"name": "ci", "scopes": ["read"]}, "k-1")
    again = post(client, {"scopes": ["read"], "name": "ci"}, "k-1")  # same body, other key order
    assert first.status_code == again.status_code == 201
    assert again.json() == {**first.json(), "key": None}  # the secret is shown once, never replayed
    assert again["Idempotent-Replayed"] == "true"
    assert ApiKey.objects.for_tenant(acme).count() == 1
    assert AuditEvent.objects.for_tenant(acme).filter(action="api_key.create").count() == 1


def test_the_same_key_with_another_body_is_a_422(api: Api, adam: User, acme: Tenant) -> None:
    client = api(adam)
    post(client, {"name": "ci", "scopes": ["read"]}, "k-1")
    response = post(client, {"name": "other", "scopes": ["read"]}, "k-1")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert "different request" in response.json()["error"]["message"]
    assert ApiKey.objects.for_tenant(acme).count() == 1


def test_the_same_key_on_another_path_is_a_422(api: Api, staff: User, alice: User) -> None:
    client = api(staff)
    post(client, {"name": "ci", "scopes": ["read"]}, "k-1")
    assert post(client, {"name": "ci", "scopes": ["read"]}, "k-1", url="/api/v1/tenants/").status_code == 422


def test_different_keys_execute_separately(api: Api, adam: User, acme: Tenant) -> None:
    client = api(adam)
    post(client, {"name": "ci", "scopes": ["read"]}, "k-1")
    post(client, {"name": "ci-2", "scopes": ["read"]}, "k-2")
    assert ApiKey.objects.for_tenant(acme).count() == 2


def test_keys_belong_to_their_principal(api: Api, adam: User, alice: User, acme: Tenant) -> None:
    post(api(adam), {"name": "ci", "scopes": ["read"]}, "shared")
    response = post(api(alice), {"name": "ci-2", "scopes": ["read"]}, "shared")
    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response
    assert ApiKey.objects.for_tenant(acme).count() == 2


def test_a_failed_request_stores_nothing_and_may_be_retried(api: Api, adam: User, acme: Tenant) -> None:
    client = api(adam)
    assert post(client, {"name": "ci", "scopes": ["bogus"]}, "k-1").status_code == 400
    assert not IdempotencyRecord.objects.exists()
    assert post(client, {"name": "ci", "scopes": ["read"]}, "k-1").status_code == 201
    assert ApiKey.objects.for_tenant(acme).count() == 1


def test_a_refused_request_stores_nothing(api: Api, bob: User) -> None:
    assert post(api(bob), {"name": "ci", "scopes": ["read"]}, "k-1").status_code == 403
    assert not IdempotencyRecord.objects.exists()


def test_posts_without_the_header_are_not_recorded(api: Api, adam: User, acme: Tenant) -> None:
    client = api(adam)
    client.post(KEYS, {"name": "ci", "scopes": ["read"]}, format="json")
    client.post(KEYS, {"name": "ci-2", "scopes": ["read"]}, format="json")
    assert ApiKey.objects.for_tenant(acme).count() == 2
    assert not IdempotencyRecord.objects.exists()


def test_an_overlong_key_is_refused(api: Api, adam: User, acme: Tenant) -> None:
    response = post(api(adam), {"name": "ci", "scopes": ["read"]}, "k" * 300)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["error"]["fields"]
    assert ApiKey.objects.for_tenant(acme).count() == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_execute_once(api: Api, adam: User, acme: Tenant) -> None:
    """Both requests race past the barrier; the unique index makes the second wait and replay the first."""
    clients = [api(adam) for _ in range(4)]
    barrier = threading.Barrier(len(clients))
    responses: list[Any] = []

    def send(client: APIClient) -> None:
        try:
            barrier.wait(timeout=10)
            responses.append(post(client, {"name": "ci", "scopes": ["read"]}, "race"))
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [r.status_code for r in responses] == [201] * len(clients)
    assert len({r.json()["key_id"] for r in responses}) == 1
    assert ApiKey.objects.for_tenant(acme).count() == 1
    assert sum(r.has_header("Idempotent-Replayed") for r in responses) == len(clients) - 1


def test_a_replayed_key_creation_never_returns_or_stores_the_secret(api: Api, adam: User, acme: Tenant) -> None:
    client = api(adam)
    first = post(client, {"name": "ci", "scopes": ["read"]}, "k-1").json()
    again = post(client, {"name": "ci", "scopes": ["read"]}, "k-1").json()
    assert first["key"] and again["key"] is None
    assert again["key_id"] == first["key_id"]
    assert first["key"] not in str(IdempotencyRecord.objects.values_list("response_body", flat=True).get())
