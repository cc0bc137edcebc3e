"""The tenant scoping chokepoint of the REST API: every tenant-owned endpoint is a ``TenantScopedViewSet``.

Every tenant-owned endpoint lives under ``/api/v1/tenants/{tenant}/...``:

- the tenant comes from the URL and the caller is let in by ``controlplane.access`` once, in ``initial()`` (the
  decision the console takes too): no access is a 404, a role too weak for the action a 403;
- querysets come only from ``Model.objects.for_tenant(self.tenant)`` narrowed by ``scope_queryset``; subclasses
  may not override ``get_queryset`` or ``get_object`` (refused at class creation);
- serializers get ``tenant`` and ``principal`` in their context and never read ownership from the payload.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db.models import Model, QuerySet
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.viewsets import GenericViewSet

from controlplane.access import Principal, TenantAccess, check_allowed, enter_tenant
from controlplane.metadata import ScopedMetadata
from tenants.models import ApiKey, Role, Tenant


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
        key = request.auth if isinstance(request.auth, ApiKey) else None
        access = enter_tenant(str(self.kwargs.get("tenant", "")), user=request.user, key=key)
        self.tenant = access.tenant
        self.principal = access.principal
        self.check_role(request)

    def required_role(self, request: Request) -> str:
        action = self.action or ""
        if action in self.action_roles:
            return self.action_roles[action]
        return self.read_role if request.method in SAFE_METHODS else self.write_role

    def check_role(self, request: Request) -> None:
        check_allowed(
            TenantAccess(self.tenant, self.principal),
            self.required_role(request),
            writes=request.method not in SAFE_METHODS,
            staff_only=(self.action or "") in self.staff_actions,
        )

    @property
    def request_id(self) -> str:
        """The request's id (from the request-id middleware), for the audit events the services write."""
        return str(getattr(self.request, "request_id", "") or "")

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


