"""The one access decision of the control plane: who is calling, and what they may do in which tenant.

The REST API (``controlplane.api.TenantScopedViewSet``) and the console (``controlplane.console.TenantConsoleView``)
both call ``tenant_access``; neither decides on its own. The rules:

- an unknown tenant, or one the caller has no role in, is ``NotFound`` (never a refusal that confirms it exists);
- an API key of the tenant with neither the ``read`` nor the ``manage`` scope is ``Forbidden`` (the caller owns it);
- a role weaker than the one required, a staff-only action by a non-staff caller, or a change to a suspended tenant
  by anyone but staff is ``Forbidden``.

Staff act as owners of every tenant; a key acts within its scopes (``manage`` as an admin, ``read`` as a viewer);
a signed-in user acts with their membership's role. Errors are domain errors: each boundary gives them its status.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from controlplane.domain_errors import Forbidden, NotFound
from tenants.models import ApiKey, Membership, Role, Scope, Tenant, role_at_least

NO_SUCH_TENANT = "no such tenant"
KEY_WITHOUT_SCOPE = "this API key has neither the 'read' nor the 'manage' scope"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a signed-in user (with their role in the tenant) or an API key."""

    user_id: int | None
    api_key: ApiKey | None
    role: str | None  # effective role in the tenant; None = no access
    is_staff: bool

    @property
    def idempotency_id(self) -> str:
        return f"key:{self.api_key.key_id}" if self.api_key else f"user:{self.user_id}"


@dataclass(frozen=True)
class TenantAccess:
    """A caller let into a tenant: the tenant and the caller's principal there."""

    tenant: Tenant
    principal: Principal


def key_role(scopes: Iterable[str]) -> str | None:
    """The role a key's scopes give it in its own tenant (None: neither ``read`` nor ``manage``)."""
    held = set(scopes)
    return Role.ADMIN if Scope.MANAGE in held else Role.VIEWER if Scope.READ in held else None


def staff_principal(user_id: int) -> Principal:
    """A platform staff user, who acts as an owner of every tenant (also where no tenant exists yet)."""
    return Principal(user_id, None, Role.OWNER, True)


def principal_for(user: Any, key: ApiKey | None, tenant: Tenant) -> Principal:
    """The caller's effective role in ``tenant``. ``user`` may be anonymous; a key, when given, decides alone."""
    if key is not None:
        return Principal(None, key, key_role(key.scopes) if key.tenant_id == tenant.pk else None, False)
    if not user or not user.is_authenticated:
        return Principal(None, None, None, False)
    if user.is_staff:
        return staff_principal(user.pk)
    membership = Membership.objects.for_tenant(tenant).filter(user_id=user.pk).only("role").first()
    return Principal(user.pk, None, membership.role if membership else None, False)


def check_allowed(access: TenantAccess, required_role: str, *, writes: bool, staff_only: bool = False) -> None:
    """Refuse (``Forbidden``) what the principal may not do in the tenant it was let into."""
    principal, tenant = access.principal, access.tenant
    if staff_only and not principal.is_staff:
        raise Forbidden("only platform staff may do this")
    if not role_at_least(principal.role, required_role):
        raise Forbidden(f"this needs the '{required_role}' role in tenant '{tenant.slug}'")
    if writes and not tenant.is_active and not principal.is_staff:
        raise Forbidden("this tenant is suspended; changes are refused")


def enter_tenant(slug: str, *, user: Any, key: ApiKey | None) -> TenantAccess:
    """Let the caller into the tenant ``slug`` with whatever role it holds there, or refuse."""
    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is None:
        raise NotFound(NO_SUCH_TENANT)
    principal = principal_for(user, key, tenant)
    if principal.role is None:
        if key is not None and key.tenant_id == tenant.pk:
            raise Forbidden(KEY_WITHOUT_SCOPE)
        raise NotFound(NO_SUCH_TENANT)
    return TenantAccess(tenant, principal)


def tenant_access(
    slug: str, *, user: Any, key: ApiKey | None, required_role: str, writes: bool, staff_only: bool = False
) -> TenantAccess:
    """The whole decision for one request: enter the tenant, then check the role the request needs."""
    access = enter_tenant(slug, user=user, key=key)
    check_allowed(access, required_role, writes=writes, staff_only=staff_only)
    return access


def listed_tenants(user: Any, key: ApiKey | None) -> dict[int, str] | None:
    """The caller's role in every tenant it may list, by tenant id; None for staff, who see every tenant as owners.

    A key lists only its own tenant (``Forbidden`` without the ``read`` or ``manage`` scope); a user their
    memberships; an anonymous caller nothing.
    """
    if key is not None:
        role = key_role(key.scopes)
        if role is None:
            raise Forbidden(KEY_WITHOUT_SCOPE)
        return {key.tenant_id: role}
    if not user or not user.is_authenticated:
        return {}
    if user.is_staff:
        return None
    return dict(Membership.objects.unscoped().filter(user_id=user.pk).values_list("tenant_id", "role"))
