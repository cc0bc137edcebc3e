"""API key pages: the secret shown once, scopes and expiry, revoke; members read, admins manage."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from tenants.models import ApiKey, AuditEvent, Tenant


def test_it_reveals_the_secret_once_and_stores_only_its_hash(
    console: Callable[[User | None], Client], adam: User, acme: Tenant
) -> None:
    client = console(adam)
    expires = (timezone.localdate() + timedelta(days=30)).isoformat()
    created = client.post("/t/acme/keys/", {"name": "ci", "scopes": ["inference", "read"], "expires_on": expires})
    assert created.status_code == 302 and created["Location"] == "/t/acme/keys/"
    response = client.get("/t/acme/keys/")
    assert response["Cache-Control"] == "no-store"
    full_key = response.context["new_key"]
    key = ApiKey.objects.for_tenant(acme).get(name="ci")
    assert full_key in response.content.decode() and key.verify(full_key.rsplit("_", 1)[1])
    assert key.scopes == ["inference", "read"] and key.expires_at is not None and key.created_by == adam
    assert full_key not in client.get("/t/acme/keys/").content.decode()


def test_it_keeps_the_input_when_the_form_is_wrong(console: Callable[[User | None], Client], adam: User) -> None:
    response = console(adam).post("/t/acme/keys/", {"name": "ci", "expires_on": "2000-01-01"})
    assert response.status_code == 422
    assert set(response.context["form"].errors) == {"scopes", "expires_on"}
    assert 'value="ci"' in response.content.decode()


def test_it_revokes_a_key(
    console: Callable[[User | None], Client], adam: User, acme: Tenant, issue_key: Callable[..., tuple[ApiKey, str]]
) -> None:
    key, _ = issue_key(acme, ["inference"])
    response = console(adam).post(f"/t/acme/keys/{key.key_id}/revoke/")
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.is_revoked
    assert AuditEvent.objects.for_tenant(acme).filter(action="api_key.revoke", actor=adam).count() == 1


def test_it_lets_members_read_keys_but_not_manage_them(
    console: Callable[[User | None], Client], bob: User, acme: Tenant, issue_key: Callable[..., tuple[ApiKey, str]]
) -> None:
    key, _ = issue_key(acme, ["inference"])
    client = console(bob)
    page = client.get("/t/acme/keys/").content.decode()
    assert key.key_id in page and "Create key" not in page and "Revoke" not in page
    assert client.post("/t/acme/keys/", {"name": "x", "scopes": ["inference"]}).status_code == 403
    assert client.post(f"/t/acme/keys/{key.key_id}/revoke/").status_code == 403


def test_it_hides_revoked_keys_unless_asked(
    console: Callable[[User | None], Client], adam: User, acme: Tenant, issue_key: Callable[..., tuple[ApiKey, str]]
) -> None:
    key, _ = issue_key(acme, ["inference"])
    key.revoke()
    client = console(adam)
    assert key.key_id not in client.get("/t/acme/keys/").content.decode()
    assert key.key_id in client.get("/t/acme/keys/?show=revoked").content.decode()


def test_it_sets_a_keys_own_batch_limit(console: Callable[[User | None], Client], adam: User, acme: Tenant) -> None:
    client = console(adam)
    made = client.post("/t/acme/keys/", {"name": "batcher", "scopes": ["inference"], "batch_requests_per_minute": 25})
    assert made.status_code == 302
    key = ApiKey.objects.for_tenant(acme).get(name="batcher")
    assert (key.batch_requests_per_minute, key.requests_per_minute) == (25, None)
    refused = client.post("/t/acme/keys/", {"name": "x", "scopes": ["inference"], "batch_requests_per_minute": 2**31})
    assert refused.status_code == 422 and "batch_requests_per_minute" in refused.context["form"].errors
    assert not ApiKey.objects.for_tenant(acme).filter(name="x").exists()
