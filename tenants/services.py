"""Tenant, membership, API-key and quota operations, shared by the REST API and the console (no logic written twice).

Each function changes rows atomically, records an audit event in the same transaction, and asks for the
gateway's config snapshot to be republished after commit. Permission rules that depend on *who* acts (only an
owner or staff may grant or take away the owner role) live here too, so both front ends enforce them.

Every function takes the acting principal as ``actor`` (keyword-only and required: ``None`` is the system, e.g. a
management command, and must be said) and the request's id as ``request_id`` for the audit event. Refusals are
``controlplane.domain_errors``: ``Invalid`` (field messages, a model's validators included), ``Forbidden``,
``Conflict``; each front end gives them its own status.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Model
from django.utils import timezone

from controlplane.audit import diff_fields, record_audit
from controlplane.contracts.snapshot import KEY_LIMIT_FIELDS
from controlplane.domain_errors import Conflict, Forbidden, Invalid
from controlplane.snapshot.triggers import request_publish
from deployments.models import ModelDeployment
from deployments.reconcile.enqueue import enqueue_reconcile_tenant
from quotas.models import Quota
from tenants.models import ApiKey, Membership, Role, Scope, Tenant

if TYPE_CHECKING:
    from controlplane.access import Principal


def _publish_after_commit(tenant_id: int) -> None:
    """Republish the tenant's section of the gateway's config snapshot once the transaction commits
    (docs/contracts.md).

    Row signals already do this for saves; ``QuerySet.update()`` (status claims, revocation) bypasses them,
    so every service asks explicitly. Idempotent within a transaction.
    """
    request_publish(tenant_id=tenant_id)


def _full_clean(instance: Model) -> None:
    """The model's own validation, its refusal as ``Invalid`` with the same field messages."""
    try:
        instance.full_clean()
    except ValidationError as exc:
        raise Invalid.from_validation_error(exc) from exc


def _can_touch_owners(actor: Principal | None) -> bool:
    return actor is None or actor.is_staff or actor.role == Role.OWNER


# ---------------------------------------------------------------- tenants


def create_tenant(
    *, slug: str, name: str, owner: User | None = None, actor: Principal | None, request_id: str = ""
) -> Tenant:
    """Create a tenant with its default Quota (and its first owner, when given)."""
    with transaction.atomic():
        tenant = Tenant(slug=slug, name=name)
        _full_clean(tenant)
        tenant.save()
        Quota.unscoped_objects.create(tenant=tenant)
        if owner is not None:
            Membership.unscoped_objects.create(tenant=tenant, user=owner, role=Role.OWNER)
        changes: dict[str, Any] = {"slug": slug, "name": name}
        if owner is not None:
            changes["owner"] = owner.pk
        record_audit(actor, tenant, "tenant.create", tenant, changes, request_id=request_id)
        _publish_after_commit(tenant.pk)
    return tenant


def update_tenant(tenant: Tenant, *, name: str, actor: Principal | None, request_id: str = "") -> Tenant:
    """Rename a tenant (the slug never changes: it names the tenant's namespace)."""
    with transaction.atomic():
        changes = diff_fields(tenant, {"name": name})
        if changes:
            tenant.name = name
            _full_clean(tenant)
            tenant.save(update_fields=["name", "updated_at"])
            record_audit(actor, tenant, "tenant.update", tenant, changes, request_id=request_id)
    return tenant


def _set_tenant_status(tenant: Tenant, new_status: str, action: str, actor: Principal | None, request_id: str) -> bool:
    with transaction.atomic():
        # Claim the transition with a conditional UPDATE so two concurrent suspends record one event.
        updated = (
            Tenant.objects.filter(pk=tenant.pk)
            .exclude(status=new_status)
            .update(status=new_status, updated_at=timezone.now())
        )
        old = tenant.status
        tenant.refresh_from_db(fields=["status", "updated_at"])
        if updated:
            record_audit(actor, tenant, action, tenant, {"status": [old, new_status]}, request_id=request_id)
            _publish_after_commit(tenant.pk)
    return bool(updated)


def suspend_tenant(tenant: Tenant, *, actor: Principal | None, request_id: str = "") -> bool:
    """Suspend: every key is refused and changes are refused. False when it was already suspended."""
    return _set_tenant_status(tenant, Tenant.Status.SUSPENDED, "tenant.suspend", actor, request_id)


def resume_tenant(tenant: Tenant, *, actor: Principal | None, request_id: str = "") -> bool:
    """Make a suspended tenant active again. False when it was already active."""
    return _set_tenant_status(tenant, Tenant.Status.ACTIVE, "tenant.resume", actor, request_id)


def delete_tenant(tenant: Tenant, *, actor: Principal | None, request_id: str = "") -> None:
    """Delete a tenant that has no deployments left; otherwise ``Conflict`` (deployments own GPUs and namespaces)."""
    with transaction.atomic():
        # Lock the tenant row so a deployment created concurrently cannot slip in between check and delete.
        Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
        remaining = ModelDeployment.objects.for_tenant(tenant).count()
        if remaining:
            raise Conflict(
                f"tenant '{tenant.slug}' still has {remaining} deployment(s); delete them first, then the tenant"
            )
        changes = {"slug": tenant.slug, "name": tenant.name}
        record_audit(actor, None, "tenant.delete", tenant, changes, request_id=request_id)
        tenant.delete()
        _publish_after_commit(tenant.pk)


# ---------------------------------------------------------------- members


def add_member(tenant: Tenant, *, user: User, role: str, actor: Principal | None, request_id: str = "") -> Membership:
    """Give ``user`` a role in ``tenant``. Only owners and staff may grant the owner role."""
    if role == Role.OWNER and not _can_touch_owners(actor):
        raise Forbidden("only an owner or platform staff may grant the owner role")
    with transaction.atomic():
        if Membership.objects.for_tenant(tenant).filter(user_id=user.pk).exists():
            raise Conflict(f"user '{user.get_username()}' is already a member of '{tenant.slug}'")
        membership = Membership.unscoped_objects.create(tenant=tenant, user=user, role=role)
        changes = {"user": user.get_username(), "role": role}
        record_audit(actor, tenant, "member.add", membership, changes, request_id=request_id)
    return membership


def _lock_owners(tenant: Tenant) -> list[int]:
    """Lock the tenant's owner rows (the last-owner check races with a concurrent demotion) and return their ids."""
    return list(
        Membership.objects.for_tenant(tenant)
        .select_for_update()
        .filter(role=Role.OWNER)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def change_role(membership: Membership, *, role: str, actor: Principal | None, request_id: str = "") -> Membership:
    """Change a member's role. Owners are changed only by owners or staff; the last owner cannot be demoted."""
    if (role == Role.OWNER or membership.role == Role.OWNER) and not _can_touch_owners(actor):
        raise Forbidden("only an owner or platform staff may grant or take away the owner role")
    with transaction.atomic():
        owners = _lock_owners(membership.tenant)
        membership.refresh_from_db(fields=["role"])
        if membership.role == role:
            return membership
        if membership.role == Role.OWNER and owners == [membership.pk]:
            raise Conflict("this is the tenant's last owner; make someone else owner first")
        old = membership.role
        membership.role = role
        _full_clean(membership)
        membership.save(update_fields=["role"])
        record_audit(
            actor, membership.tenant, "member.change_role", membership, {"role": [old, role]}, request_id=request_id
        )
    return membership


def remove_member(membership: Membership, *, actor: Principal | None, request_id: str = "") -> None:
    """Remove a member. Owners are removed only by owners or staff; the last owner cannot be removed."""
    if membership.role == Role.OWNER and not _can_touch_owners(actor):
        raise Forbidden("only an owner or platform staff may remove an owner")
    with transaction.atomic():
        owners = _lock_owners(membership.tenant)
        if owners == [membership.pk]:
            raise Conflict("this is the tenant's last owner; make someone else owner first")
        record_audit(
            actor,
            membership.tenant,
            "member.remove",
            membership,
            {"user": membership.user.get_username(), "role": membership.role},
            request_id=request_id,
        )
        membership.delete()


# ---------------------------------------------------------------- API keys


def _check_key_name_free(tenant_id: int, name: str, *, other_than: int | None = None) -> None:
    """Refuse a name another unrevoked key of the tenant has (the ``apikey_unique_live_name_per_tenant`` rule)."""
    taken = ApiKey.objects.for_tenant(tenant_id).filter(name=name, revoked_at__isnull=True)
    if other_than is not None:
        taken = taken.exclude(pk=other_than)
    if taken.exists():
        refusal = f"a key named {name!r} already exists in this tenant; pick another name or revoke that key first"
        raise Invalid({"name": [refusal]})


@contextmanager
def _key_name_race(tenant_id: int, name: str, *, other_than: int | None = None) -> Iterator[None]:
    """Two requests naming their keys alike at once: the loser's unique-index violation becomes the same refusal."""
    try:
        with transaction.atomic():  # a savepoint: the violation must not end the caller's transaction
            yield
    except IntegrityError:
        _check_key_name_free(tenant_id, name, other_than=other_than)
        raise


def issue_key(
    tenant: Tenant,
    *,
    name: str,
    scopes: list[str],
    created_by: User | None = None,
    expires_at: datetime | None = None,
    requests_per_minute: int | None = None,
    tokens_per_minute: int | None = None,
    max_concurrent_requests: int | None = None,
    batch_requests_per_minute: int | None = None,
    batch_tokens_per_minute: int | None = None,
    actor: Principal | None,
    request_id: str = "",
) -> tuple[ApiKey, str]:
    """Issue a key; returns it with the full secret string, which is shown once and never stored.

    Its name must be free among the tenant's unrevoked keys (``Invalid`` on ``name`` otherwise).
    """
    unknown = sorted(set(scopes) - set(Scope.values))
    if not scopes or unknown:
        raise Invalid({"scopes": [f"choose from {', '.join(Scope.values)}; got {unknown or []}"]})
    with transaction.atomic():
        _check_key_name_free(tenant.pk, name)
        with _key_name_race(tenant.pk, name):
            key, full_key = ApiKey.issue(
                tenant=tenant,
                name=name,
                scopes=scopes,
                created_by=created_by,
                expires_at=expires_at,
                requests_per_minute=requests_per_minute,
                tokens_per_minute=tokens_per_minute,
                max_concurrent_requests=max_concurrent_requests,
                batch_requests_per_minute=batch_requests_per_minute,
                batch_tokens_per_minute=batch_tokens_per_minute,
            )
        record_audit(
            actor,
            tenant,
            "api_key.create",
            key,
            {"name": name, "scopes": key.scopes, "key_id": key.key_id, "expires_at": expires_at},
            request_id=request_id,
        )
        _publish_after_commit(tenant.pk)
    return key, full_key


def update_key(key: ApiKey, *, changes: dict[str, Any], actor: Principal | None, request_id: str = "") -> ApiKey:
    """Rename a key or change its own limits (scopes and secrets never change: issue a new key instead).

    An unrevoked key's new name must be free among the tenant's unrevoked keys (``Invalid`` on ``name`` otherwise).
    """
    allowed = {"name", "expires_at", *KEY_LIMIT_FIELDS}
    with transaction.atomic():
        diff = diff_fields(key, {k: v for k, v in changes.items() if k in allowed})
        if diff:
            if "name" in diff and not key.is_revoked:
                _check_key_name_free(key.tenant_id, changes["name"], other_than=key.pk)
            for field in diff:
                setattr(key, field, changes[field])
            with _key_name_race(key.tenant_id, key.name, other_than=key.pk):
                key.save(update_fields=list(diff))
            record_audit(actor, key.tenant, "api_key.update", key, diff, request_id=request_id)
            _publish_after_commit(key.tenant_id)
    return key


def revoke_key(key: ApiKey, *, actor: Principal | None, request_id: str = "") -> bool:
    """Revoke a key everywhere (the gateway drops it within 2 s). False when it was already revoked."""
    with transaction.atomic():
        revoked = key.revoke()
        if revoked:
            changes = {"revoked_at": key.revoked_at}
            record_audit(actor, key.tenant, "api_key.revoke", key, changes, request_id=request_id)
            _publish_after_commit(key.tenant_id)
    return revoked


# ---------------------------------------------------------------- quotas


def update_quota(quota: Quota, *, changes: dict[str, Any], actor: Principal | None, request_id: str = "") -> Quota:
    """Change a tenant's quota (staff only; the caller checks) and republish the gateway's limits."""
    with transaction.atomic():
        diff = diff_fields(quota, changes)
        if diff:
            for field in diff:
                setattr(quota, field, changes[field])
            _full_clean(quota)
            quota.save()
            record_audit(actor, quota.tenant, "quota.update", quota, diff, request_id=request_id)
            _publish_after_commit(quota.tenant_id)
            # The namespace's ResourceQuota follows at once, not at the next resync.
            enqueue_reconcile_tenant(quota.tenant_id)
    return quota
