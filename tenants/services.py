"""Tenant, membership and API-key operations, shared by the REST API and the console (no logic written twice).

Each function changes rows atomically, records an audit event in the same transaction, and asks for the
gateway's config snapshot to be republished after commit. Permission rules that depend on *who* acts (only an
owner or staff may grant or take away the owner role) live here too, so both front ends enforce them; ``by``
is the acting ``controlplane.access.Principal`` (None = the system, e.g. a management command).

``audit_from`` is what ``controlplane.audit.record_audit`` attributes the event to (usually the request, which
also carries the request id); it defaults to ``by``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from rest_framework import exceptions, status

from controlplane.audit import diff_fields, record_audit
from controlplane.snapshot.triggers import request_publish
from deployments.models import ModelDeployment
from deployments.reconcile.enqueue import enqueue_reconcile_tenant
from quotas.models import Quota
from tenants.models import ApiKey, Membership, Role, Scope, Tenant

if TYPE_CHECKING:
    from controlplane.access import Principal


class Conflict(exceptions.APIException):
    """The change conflicts with the current state (HTTP 409)."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"
    default_detail = "the change conflicts with the current state"


class RoleRefused(exceptions.PermissionDenied):
    """The actor's role is too weak for this particular change (HTTP 403)."""

    default_code = "permission_denied"


def _publish_after_commit() -> None:
    """Republish the gateway's config snapshot once the transaction commits (docs/contracts.md).

    Row signals already do this for saves; ``QuerySet.update()`` (status claims, revocation) bypasses them,
    so every service asks explicitly. Idempotent within a transaction.
    """
    request_publish()


def _can_touch_owners(by: Principal | None) -> bool:
    return by is None or by.is_staff or by.role == Role.OWNER


# ---------------------------------------------------------------- tenants


def create_tenant(
    *, slug: str, name: str, owner: User | None = None, by: Principal | None = None, audit_from: Any = None
) -> Tenant:
    """Create a tenant with its default Quota (and its first owner, when given)."""
    with transaction.atomic():
        tenant = Tenant(slug=slug, name=name)
        tenant.full_clean()
        tenant.save()
        Quota.unscoped_objects.create(tenant=tenant)
        if owner is not None:
            Membership.unscoped_objects.create(tenant=tenant, user=owner, role=Role.OWNER)
        changes: dict[str, Any] = {"slug": slug, "name": name}
        if owner is not None:
            changes["owner"] = owner.pk
        record_audit(audit_from or by, tenant, "tenant.create", tenant, changes)
        _publish_after_commit()
    return tenant


def update_tenant(tenant: Tenant, *, name: str, by: Principal | None = None, audit_from: Any = None) -> Tenant:
    """Rename a tenant (the slug never changes: it names the tenant's namespace)."""
    with transaction.atomic():
        changes = diff_fields(tenant, {"name": name})
        if changes:
            tenant.name = name
            tenant.full_clean()
            tenant.save(update_fields=["name", "updated_at"])
            record_audit(audit_from or by, tenant, "tenant.update", tenant, changes)
    return tenant


def _set_tenant_status(tenant: Tenant, new_status: str, action: str, by: Principal | None, audit_from: Any) -> bool:
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
            record_audit(audit_from or by, tenant, action, tenant, {"status": [old, new_status]})
            _publish_after_commit()
    return bool(updated)


def suspend_tenant(tenant: Tenant, *, by: Principal | None = None, audit_from: Any = None) -> bool:
    """Suspend: every key is refused and changes are refused. False when it was already suspended."""
    return _set_tenant_status(tenant, Tenant.Status.SUSPENDED, "tenant.suspend", by, audit_from)


def resume_tenant(tenant: Tenant, *, by: Principal | None = None, audit_from: Any = None) -> bool:
    """Make a suspended tenant active again. False when it was already active."""
    return _set_tenant_status(tenant, Tenant.Status.ACTIVE, "tenant.resume", by, audit_from)


def delete_tenant(tenant: Tenant, *, by: Principal | None = None, audit_from: Any = None) -> None:
    """Delete a tenant that has no deployments left; otherwise 409 (deployments own GPUs and namespaces)."""
    with transaction.atomic():
        # Lock the tenant row so a deployment created concurrently cannot slip in between check and delete.
        Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
        remaining = ModelDeployment.objects.for_tenant(tenant).count()
        if remaining:
            raise Conflict(
                f"tenant '{tenant.slug}' still has {remaining} deployment(s); delete them first, then the tenant"
            )
        record_audit(audit_from or by, None, "tenant.delete", tenant, {"slug": tenant.slug, "name": tenant.name})
        tenant.delete()
        _publish_after_commit()


# ---------------------------------------------------------------- members


def add_member(
    tenant: Tenant, *, user: User, role: str, by: Principal | None = None, audit_from: Any = None
) -> Membership:
    """Give ``user`` a role in ``tenant``. Only owners and staff may grant the owner role."""
    if role == Role.OWNER and not _can_touch_owners(by):
        raise RoleRefused("only an owner or platform staff may grant the owner role")
    with transaction.atomic():
        if Membership.objects.for_tenant(tenant).filter(user_id=user.pk).exists():
            raise Conflict(f"user '{user.get_username()}' is already a member of '{tenant.slug}'")
        membership = Membership.unscoped_objects.create(tenant=tenant, user=user, role=role)
        record_audit(audit_from or by, tenant, "member.add", membership, {"user": user.get_username(), "role": role})
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


def change_role(
    membership: Membership, *, role: str, by: Principal | None = None, audit_from: Any = None
) -> Membership:
    """Change a member's role. Owners are changed only by owners or staff; the last owner cannot be demoted."""
    if (role == Role.OWNER or membership.role == Role.OWNER) and not _can_touch_owners(by):
        raise RoleRefused("only an owner or platform staff may grant or take away the owner role")
    with transaction.atomic():
        owners = _lock_owners(membership.tenant)
        membership.refresh_from_db(fields=["role"])
        if membership.role == role:
            return membership
        if membership.role == Role.OWNER and owners == [membership.pk]:
            raise Conflict("this is the tenant's last owner; make someone else owner first")
        old = membership.role
        membership.role = role
        membership.full_clean()
        membership.save(update_fields=["role"])
        record_audit(audit_from or by, membership.tenant, "member.change_role", membership, {"role": [old, role]})
    return membership


def remove_member(membership: Membership, *, by: Principal | None = None, audit_from: Any = None) -> None:
    """Remove a member. Owners are removed only by owners or staff; the last owner cannot be removed."""
    if membership.role == Role.OWNER and not _can_touch_owners(by):
        raise RoleRefused("only an owner or platform staff may remove an owner")
    with transaction.atomic():
        owners = _lock_owners(membership.tenant)
        if owners == [membership.pk]:
            raise Conflict("this is the tenant's last owner; make someone else owner first")
        record_audit(
            audit_from or by,
            membership.tenant,
            "member.remove",
            membership,
            {"user": membership.user.get_username(), "role": membership.role},
        )
        membership.delete()


# ---------------------------------------------------------------- API keys


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
    by: Principal | None = None,
    audit_from: Any = None,
) -> tuple[ApiKey, str]:
    """Issue a key; returns it with the full secret string, which is shown once and never stored."""
    unknown = sorted(set(scopes) - set(Scope.values))
    if not scopes or unknown:
        raise exceptions.ValidationError({"scopes": [f"choose from {', '.join(Scope.values)}; got {unknown or []}"]})
    with transaction.atomic():
        key, full_key = ApiKey.issue(
            tenant=tenant,
            name=name,
            scopes=scopes,
            created_by=created_by,
            expires_at=expires_at,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            max_concurrent_requests=max_concurrent_requests,
        )
        record_audit(
            audit_from or by,
            tenant,
            "api_key.create",
            key,
            {"name": name, "scopes": key.scopes, "key_id": key.key_id, "expires_at": expires_at},
        )
        _publish_after_commit()
    return key, full_key


def update_key(key: ApiKey, *, changes: dict[str, Any], by: Principal | None = None, audit_from: Any = None) -> ApiKey:
    """Rename a key or change its own limits (scopes and secrets never change: issue a new key instead)."""
    allowed = {"name", "requests_per_minute", "tokens_per_minute", "max_concurrent_requests", "expires_at"}
    with transaction.atomic():
        diff = diff_fields(key, {k: v for k, v in changes.items() if k in allowed})
        if diff:
            for field in diff:
                setattr(key, field, changes[field])
            key.save(update_fields=list(diff))
            record_audit(audit_from or by, key.tenant, "api_key.update", key, diff)
            _publish_after_commit()
    return key


def revoke_key(key: ApiKey, *, by: Principal | None = None, audit_from: Any = None) -> bool:
    """Revoke a key everywhere (the gateway drops it within 2 s). False when it was already revoked."""
    with transaction.atomic():
        revoked = key.revoke()
        if revoked:
            record_audit(audit_from or by, key.tenant, "api_key.revoke", key, {"revoked_at": key.revoked_at})
            _publish_after_commit()
    return revoked


# ---------------------------------------------------------------- quotas


def update_quota(
    quota: Quota, *, changes: dict[str, Any], by: Principal | None = None, audit_from: Any = None
) -> Quota:
    """Change a tenant's quota (staff only; the caller checks) and republish the gateway's limits."""
    with transaction.atomic():
        diff = diff_fields(quota, changes)
        if diff:
            for field in diff:
                setattr(quota, field, changes[field])
            quota.full_clean()
            quota.save()
            record_audit(audit_from or by, quota.tenant, "quota.update", quota, diff)
            _publish_after_commit()
            # The namespace's ResourceQuota follows at once, not at the next resync.
            enqueue_reconcile_tenant(quota.tenant_id)
    return quota
