"""Model rules of tenants, memberships, keys, audit events and quotas; fail-closed managers; admin pages."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from controlplane.audit import diff_fields, record_audit
from controlplane.contracts import keyformat
from controlplane.domain_errors import Conflict, Invalid
from controlplane.scoping import UnscopedQueryError
from quotas.models import Quota
from tenants import services
from tenants.models import ApiKey, AuditEvent, IdempotencyRecord, Membership, Role, Tenant, role_at_least

pytestmark = pytest.mark.django_db


def test_roles_are_ordered_viewer_member_admin_owner() -> None:
    assert role_at_least(Role.OWNER, Role.ADMIN) and role_at_least(Role.MEMBER, Role.MEMBER)
    assert not role_at_least(Role.VIEWER, Role.MEMBER)
    assert not role_at_least(None, Role.VIEWER)


@pytest.mark.parametrize("slug", ["Acme", "acme_1", "-acme", "a" * 41, ""])
def test_tenant_slugs_must_be_dns_labels(slug: str) -> None:
    with pytest.raises(Invalid) as refused:
        services.create_tenant(slug=slug, name="x", actor=None)
    assert "slug" in refused.value.fields
    assert not Tenant.objects.exists()


def test_create_tenant_makes_its_quota_and_owner_atomically(alice: User) -> None:
    tenant = services.create_tenant(slug="initech", name="Initech", owner=alice, actor=None)
    assert Quota.objects.for_tenant(tenant).count() == 1
    assert Membership.objects.for_tenant(tenant).get().role == Role.OWNER


def test_a_user_is_a_member_of_a_tenant_once(alice: User, acme: Tenant) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        Membership.unscoped_objects.create(tenant=acme, user=alice, role=Role.VIEWER)


def test_tenant_owned_managers_fail_closed(acme: Tenant) -> None:
    with pytest.raises(UnscopedQueryError):
        list(ApiKey.objects.all())
    with pytest.raises(UnscopedQueryError):
        AuditEvent.objects.filter(action="x").exists()
    assert ApiKey.objects.for_tenant(acme).count() == 0


def test_a_key_stores_only_its_id_and_hmac(acme: Tenant) -> None:
    key, full_key = ApiKey.issue(tenant=acme, name="k", scopes=["read", "read", "inference"])
    parsed = keyformat.parse_key(full_key)
    assert parsed is not None
    assert key.scopes == ["inference", "read"]
    assert key.secret_hash != parsed.secret and len(key.secret_hash) == 64
    assert key.verify(parsed.secret) and not key.verify(parsed.secret[:-1] + "x")
    assert parsed.secret not in key.prefix


def test_keys_become_unusable_when_revoked_expired_or_suspended(acme: Tenant, globex: Tenant) -> None:
    revoked, _ = ApiKey.issue(tenant=acme, name="r", scopes=["read"])
    assert revoked.is_usable and revoked.revoke() and not revoked.revoke()
    assert not revoked.is_usable
    expired, _ = ApiKey.issue(tenant=acme, name="e", scopes=["read"], expires_at=timezone.now() - timedelta(1))
    assert expired.is_expired and not expired.is_usable
    suspended, _ = ApiKey.issue(tenant=globex, name="s", scopes=["read"])
    services.suspend_tenant(globex, actor=None)
    suspended.refresh_from_db()
    assert not suspended.is_usable


def test_issue_key_refuses_unknown_or_no_scopes(acme: Tenant) -> None:
    for scopes in ([], ["admin"]):
        with pytest.raises(Invalid) as refused:
            services.issue_key(acme, name="x", scopes=scopes, actor=None)
        assert list(refused.value.fields) == ["scopes"]
    assert ApiKey.objects.for_tenant(acme).count() == 0


def test_quota_gpus_are_validated(acme: Tenant) -> None:
    quota = Quota.objects.for_tenant(acme).get()
    for gpus in ({"tpu": 1}, {"nvidia-h100": -1}, {"nvidia-h100": True}, [1]):
        with pytest.raises(Invalid) as refused:
            services.update_quota(quota, changes={"gpus": gpus}, actor=None)
        assert "gpus" in refused.value.fields
    quota.refresh_from_db()
    assert quota.gpus == {}


def test_last_owner_rule_holds_in_the_service(alice: User, bob: User, acme: Tenant) -> None:
    owner = Membership.objects.for_tenant(acme).get(user=alice)
    with pytest.raises(Conflict):
        services.remove_member(owner, actor=None)
    with pytest.raises(Conflict):
        services.change_role(owner, role=Role.MEMBER, actor=None)
    services.change_role(Membership.objects.for_tenant(acme).get(user=bob), role=Role.OWNER, actor=None)
    services.remove_member(owner, actor=None)
    assert list(Membership.objects.for_tenant(acme).values_list("role", flat=True)) == [Role.OWNER]


def test_audit_records_redact_secrets_and_serialise_values(acme: Tenant, alice: User) -> None:
    when = timezone.now()
    event = record_audit(None, acme, "x.y", acme, {"secret_hash": "abc", "when": when, "owner": alice})
    assert event.changes == {"secret_hash": "[redacted]", "when": when.isoformat(), "owner": alice.pk}
    assert (event.object_type, event.object_id, event.actor_id) == ("tenant", str(acme.pk), None)
    assert diff_fields(acme, {"name": "Acme", "slug": "other"}) == {"slug": ["acme", "other"]}


def test_idempotency_keys_are_unique_per_principal() -> None:
    fields = {"method": "POST", "path": "/x", "body_sha256": "0" * 64}
    IdempotencyRecord.objects.create(principal="user:1", key="k", **fields)
    IdempotencyRecord.objects.create(principal="user:2", key="k", **fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        IdempotencyRecord.objects.create(principal="user:1", key="k", **fields)


def test_every_model_has_an_admin_page_that_loads(
    admin_client: Client, acme: Tenant, alice: User, issue_key: Callable
) -> None:
    issue_key(acme, ["read"])
    record_audit(None, acme, "tenant.update", acme, {})
    for app in ("tenants", "quotas"):
        from django.apps import apps

        for model in apps.get_app_config(app).get_models():
            assert model in admin.site._registry, f"{model.__name__} has no admin"
            url = reverse(f"admin:{app}_{model._meta.model_name}_changelist")
            assert admin_client.get(url).status_code == 200, url


def test_the_admin_cannot_add_keys_or_see_their_hash(admin_client: Client, acme: Tenant, issue_key: Callable) -> None:
    key, _ = issue_key(acme, ["read"])
    assert admin_client.get(reverse("admin:tenants_apikey_add")).status_code == 403
    page = admin_client.get(reverse("admin:tenants_apikey_change", args=[key.pk])).content.decode()
    assert key.secret_hash not in page
    assert 'name="secret_hash"' not in page


def test_the_admin_creates_tenants_with_their_quota(admin_client: Client) -> None:
    response = admin_client.post(
        reverse("admin:tenants_tenant_add"),
        {"slug": "initech", "name": "Initech", "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    tenant = Tenant.objects.get(slug="initech")
    assert Quota.objects.for_tenant(tenant).exists()
