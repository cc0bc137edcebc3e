"""The tenant scoping chokepoint of the REST API: one place decides which tenant a request may see.

Every tenant-owned endpoint lives under ``/api/v1/tenants/{tenant}/...`` and is a ``TenantScopedViewSet``:

- the tenant comes from the URL and is resolved against the authenticated principal once, in ``initial()``;
  a principal with no access to it gets a 404 (never a 403 that confirms the tenant exists);
- the principal's role (membership, staff, or an API key's scopes) is checked against the action's required role:
  too weak is a 403;
- querysets come only from ``Model.objects.for_tenant(self.tenant)`` narrowed by ``scope_queryset``; subclasses
  may not override ``get_queryset`` or ``get_object`` (refused at class creation);
- serializers get ``tenant`` and ``principal`` in their context and never read ownership from the payload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from django.db.models import Model, QuerySet
from django.http import Http404
from rest_framework import exceptions
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.viewsets import GenericViewSet

from controlplane.metadata import ScopedMetadata
from tenants.models import ApiKey, Membership, Role, Scope, Tenant, role_at_least


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


def resolve_principal(request: Request, tenant: Tenant) -> Principal:
    """The caller's effective role in ``tenant``. Staff act as owners; a key acts within its scopes."""
    key = request.auth if isinstance(request.auth, ApiKey) else None
    if key is not None:
        if key.tenant_id != tenant.pk:
            return Principal(None, key, None, False)
        scopes = set(key.scopes)
        role = Role.ADMIN if Scope.MANAGE in scopes else Role.VIEWER if Scope.READ in scopes else None
        return Principal(None, key, role, False)
    user = request.user
    if not user or not user.is_authenticated:
        return Principal(None, None, None, False)
    if user.is_staff:
        return Principal(user.pk, None, Role.OWNER, True)
    membership = Membership.objects.for_tenant(tenant).filter(user_id=user.pk).only("role").first()
    return Principal(user.pk, None, membership.role if membership else None, False)


class TenantScopedViewSet(GenericViewSet):
    """Base for every tenant-owned endpoint. Subclasses set ``model`` and may narrow with ``scope_queryset``."""

    model: ClassVar[type[Model]]
    lookup_value_regex = r"[^/]+"
    metadata_class = ScopedMetadata
    # Required role per action; actions not listed need ``read_role`` for safe methods, ``write_role`` otherwise.
    read_role: ClassVar[str] = Role.VIEWER
    write_role: ClassVar[str] = Role.MEMBER
    action_roles: ClassVar[dict[str, str]] = {}
    # Actions only platform staff may perform (e.g. editing quotas).
    staff_actions: ClassVar[frozenset[str]] = frozenset()

    tenant: Tenant
    principal: Principal

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for forbidden in ("get_queryset", "get_object"):
            if forbidden in cls.__dict__:
                raise TypeError(f"{cls.__name__} may not override {forbidden}(); implement scope_queryset() instead")

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # authentication, IsAuthenticated, throttles
        tenant = Tenant.objects.filter(slug=self.kwargs.get("tenant", "")).first()
        if tenant is None:
            raise Http404("no such tenant")
        principal = resolve_principal(request, tenant)
        if principal.role is None:
            if principal.api_key is not None and principal.api_key.tenant_id == tenant.pk:
                raise exceptions.PermissionDenied("this API key has neither the 'read' nor the 'manage' scope")
            raise Http404("no such tenant")
        self.tenant = tenant
        self.principal = principal
        self.check_role(request)

    def required_role(self, request: Request) -> str:
        action = self.action or ""
        if action in self.action_roles:
            return self.action_roles[action]
        return self.read_role if request.method in SAFE_METHODS else self.write_role

    def check_role(self, request: Request) -> None:
        if (self.action or "") in self.staff_actions and not self.principal.is_staff:
            raise exceptions.PermissionDenied("only platform staff may do this")
        needed = self.required_role(request)
        if not role_at_least(self.principal.role, needed):
            raise exceptions.PermissionDenied(f"this needs the '{needed}' role in tenant '{self.tenant.slug}'")
        if request.method not in SAFE_METHODS and not self.tenant.is_active and not self.principal.is_staff:
            raise exceptions.PermissionDenied("this tenant is suspended; changes are refused")

    def scope_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Narrow the tenant's rows further (filters, select_related); never widen them."""
        return queryset

    def get_queryset(self) -> QuerySet[Any]:
        return self.scope_queryset(self.model.objects.for_tenant(self.tenant))  # type: ignore[attr-defined]

    def get_serializer_context(self) -> dict[str, Any]:
        context = dict(super().get_serializer_context())
        if hasattr(self, "tenant"):
            context["tenant"] = self.tenant
            context["principal"] = self.principal
        return context


