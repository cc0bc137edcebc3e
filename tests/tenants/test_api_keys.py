"""/api/v1/tenants/{tenant}/keys/: issue (secret shown once), list (never the secret), update, revoke; scopes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.test import APIClient

from controlplane.contracts import keyformat
from tenants.models import ApiKey, AuditEvent, Tenant

pytestmark = pytest.mark.django_db

Api = Callable[[User | None], APIClient]
BASE = "/api/v1/tenants/acme/keys/"


def test_an_admin_issues_a_key_and_sees_the_secret_once(api: Api, adam: User, acme: Tenant) -> None:
    client = api(adam)
    response = client.post(BASE, {"name": "ci", "scopes": ["inference", "read"]}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert response["Cache-Control"] == "no-store"
    parsed = keyformat.parse_key(body["key"])
    assert parsed is not None and parsed.key_id == body["key_id"]
    key = ApiKey.objects.for_tenant(acme).get(key_id=body["key_id"])
    assert key.verify(parsed.secret)
    assert key.created_by == adam
    assert body["scopes"] == ["inference", "read"]
    listed = client.get(BASE)
    detail = client.get(f"{BASE}{key.key_id}/")
    for text in (listed.content.decode(), detail.content.decode()):
        assert parsed.secret not in text
        assert key.secret_hash not in text
    assert "key" not in detail.json()


def test_the_issued_key_authenticates(api: Api, adam: User) -> None:
    full_key = api(adam).post(BASE, {"name": "bot", "scopes": ["read"]}, format="json").json()["key"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {full_key}")
    assert client.get("/api/v1/tenants/acme/").status_code == 200


def test_it_ignores_ownership_fields_in_the_payload(api: Api, adam: User, charlie: User, globex: Tenant) -> None:
    payload = {
        "name": "x",
        "scopes": ["read"],
        "tenant": globex.pk,
        "created_by": charlie.pk,
        "key_id": "aaaaaaaa",
        "secret_hash": "0" * 64,
        "revoked_at": timezone.now().isoformat(),
    }
    body = api(adam).post(BASE, payload, format="json").json()
    key = ApiKey.objects.unscoped().get(key_id=body["key_id"])
    assert (key.tenant.slug, key.created_by, key.revoked_at) == ("acme", adam, None)
    assert key.key_id != "aaaaaaaa" and key.secret_hash != "0" * 64


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x", "scopes": ["root"]}, "scopes"),
        ({"name": "x", "scopes": "read"}, "scopes"),
        ({"scopes": ["read"]}, "name"),
        ({"name": "x", "scopes": ["read"], "requests_per_minute": 0}, "requests_per_minute"),
        ({"name": "x", "scopes": ["read"], "tokens_per_minute": "many"}, "tokens_per_minute"),
        ({"name": "x", "scopes": ["read"], "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ],
)
def test_it_refuses_bad_key_input(api: Api, adam: User, payload: dict[str, object], field: str) -> None:
    response = api(adam).post(BASE, payload, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert ApiKey.objects.unscoped().count() == 0


def test_members_list_keys_and_filter_them(api: Api, bob: User, acme: Tenant, issue_key: Callable[..., tuple]) -> None:
    live, _ = issue_key(acme, ["inference"])
    dead, _ = issue_key(acme, ["read"])
    dead.revoke()
    client = api(bob)
    assert {row["key_id"] for row in client.get(BASE).json()["results"]} == {live.key_id, dead.key_id}
    assert [row["key_id"] for row in client.get(BASE + "?revoked=false").json()["results"]] == [live.key_id]
    assert [row["key_id"] for row in client.get(BASE + "?scope=read").json()["results"]] == [dead.key_id]


def test_viewers_cannot_list_keys(api: Api, vera: User) -> None:
    assert api(vera).get(BASE).status_code == 403


def test_an_admin_revokes_a_key_once(api: Api, adam: User, acme: Tenant, issue_key: Callable[..., tuple]) -> None:
    key, full_key = issue_key(acme, ["read"])
    client = api(adam)
    response = client.post(f"{BASE}{key.key_id}/revoke/")
    assert response.status_code == 200
    assert response.json()["revoked"] is True
    assert client.post(f"{BASE}{key.key_id}/revoke/").status_code == 200
    assert AuditEvent.objects.for_tenant(acme).filter(action="api_key.revoke").count() == 1
    revoked = APIClient()
    revoked.credentials(HTTP_AUTHORIZATION=f"Bearer {full_key}")
    assert revoked.get("/api/v1/tenants/acme/").status_code == 401


def test_an_admin_renames_a_key_and_sets_limits(
    api: Api, adam: User, acme: Tenant, issue_key: Callable[..., tuple]
) -> None:
    key, _ = issue_key(acme, ["read"])
    expiry = timezone.now() + timedelta(days=3)
    response = api(adam).patch(
        f"{BASE}{key.key_id}/",
        {"name": "renamed", "requests_per_minute": 5, "expires_at": expiry.isoformat(), "scopes": ["manage"]},
        format="json",
    )
    assert response.status_code == 200
    key.refresh_from_db()
    assert (key.name, key.requests_per_minute, key.scopes) == ("renamed", 5, ["read"])
    assert key.expires_at == expiry
    assert AuditEvent.objects.for_tenant(acme).get(action="api_key.update").changes["name"] == ["key-read", "renamed"]


def test_another_tenants_key_is_404(api: Api, adam: User, globex: Tenant, issue_key: Callable[..., tuple]) -> None:
    theirs, _ = issue_key(globex, ["read"])
    assert api(adam).get(f"{BASE}{theirs.key_id}/").status_code == 404
    assert api(adam).post(f"{BASE}{theirs.key_id}/revoke/").status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_a_manage_key_acts_as_admin_and_is_the_audited_actor(key_api: Callable[..., APIClient], acme: Tenant) -> None:
    response = key_api(acme, ["manage"]).post(BASE, {"name": "child", "scopes": ["inference"]}, format="json")
    assert response.status_code == 201
    event = AuditEvent.objects.for_tenant(acme).get(action="api_key.create")
    assert event.actor is None and event.actor_key is not None
    assert event.actor_key.scopes == ["manage"]


def test_scopes_decide_what_a_key_may_do(key_api: Callable[..., APIClient], acme: Tenant, globex: Tenant) -> None:
    read = key_api(acme, ["read"])
    assert read.get("/api/v1/tenants/acme/members/").status_code == 200
    assert read.post(BASE, {"name": "x", "scopes": ["read"]}, format="json").status_code == 403
    assert key_api(acme, ["inference"]).get("/api/v1/tenants/acme/members/").status_code == 403
    assert key_api(globex, ["manage"]).get("/api/v1/tenants/acme/members/").status_code == 404


def test_a_bad_bearer_key_is_401(acme: Tenant) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer fd_live_aaaaaaaa_" + "b" * 40)
    response = client.get("/api/v1/tenants/acme/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_a_keys_batch_limits_reach_the_snapshot(
    api: Api, adam: User, acme: Tenant, redis_prefix: str, redis_url: str
) -> None:
    import redis

    from controlplane.snapshot.publisher import publish_config
    from tests.snapshot.test_publish import stored

    created = api(adam).post(
        BASE,
        {"name": "batcher", "scopes": ["inference"], "batch_requests_per_minute": 30, "batch_tokens_per_minute": 900},
        format="json",
    )
    assert created.status_code == 201, created.content
    assert (created.json()["batch_requests_per_minute"], created.json()["batch_tokens_per_minute"]) == (30, 900)
    key_id = created.json()["key_id"]
    patched = api(adam).patch(f"{BASE}{key_id}/", {"batch_tokens_per_minute": None}, format="json")
    assert patched.status_code == 200 and patched.json()["batch_tokens_per_minute"] is None
    publish_config()
    limits = stored(redis.Redis.from_url(redis_url), redis_prefix)["keys"][key_id]["limits"]
    assert (limits["batch_requests_per_minute"], limits["batch_tokens_per_minute"]) == (30, None)
    assert limits["requests_per_minute"] is None  # the interactive windows are apart
