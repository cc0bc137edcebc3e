"""The console's scoping chokepoint: one place that turns ``/t/<slug>/...`` into a tenant and a role.

The decision is ``controlplane.access.tenant_access``, the one the REST API takes: a signed-out visitor is sent to
the sign-in page, someone with no access to the tenant gets a 404 (never a 403 that confirms the tenant exists),
a role too weak for the page or the action gets a 403, and a suspended tenant refuses changes except from staff.

Views are ``TenantConsoleView`` subclasses with ``read_role``/``write_role``; ``self.tenant``, ``self.principal`` and
the template context (``tenant``, ``role``, ``can_write``, ``nav_tenants`` …) are set before the handler runs.
``render_page_or_partial``: the full page, or only its partial when the request comes from htmx.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.views import View

from controlplane.access import Principal, principal_for, tenant_access
from controlplane.domain_errors import Forbidden, NotFound
from tenants.models import Membership, Role, Tenant, role_at_least

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PAGE_SIZE = 50


def console_principal(request: HttpRequest, tenant: Tenant) -> Principal:
    """The signed-in user's principal in ``tenant`` by the REST API's own rules (the console has no API keys)."""
    return principal_for(request.user, None, tenant)


def nav_tenants(request: HttpRequest) -> list[dict[str, str]]:
    """Tenants for the switcher: the user's memberships (one query), or every tenant for staff (capped)."""
    user = request.user
    if not user.is_authenticated:
        return []
    if user.is_staff:
        return [
            {"slug": slug, "name": name, "role": Role.OWNER}
            for slug, name in Tenant.objects.values_list("slug", "name")[:200]
        ]
    rows = (
        Membership.objects.unscoped()
        .filter(user_id=user.pk)
        .order_by("tenant__slug")
        .values_list("tenant__slug", "tenant__name", "role")
    )
    return [{"slug": slug, "name": name, "role": role} for slug, name, role in rows]


def nav_context(request: HttpRequest) -> dict[str, Any]:
    """Context every console page needs for its header; usable as a context processor."""
    return {"nav_tenants": nav_tenants(request)}


def paginate(request: HttpRequest, queryset: QuerySet[Any] | list[Any], per_page: int = PAGE_SIZE) -> Page:
    """The requested page (``?page=``), clamped to the valid range."""
    return Paginator(queryset, per_page).get_page(request.GET.get("page"))


def query_without_page(request: HttpRequest) -> str:
    """The current filters as a query string without ``page`` (for pagination links)."""
    params = request.GET.copy()
    params.pop("page", None)
    return params.urlencode()


def render_page_or_partial(
    request: HttpRequest, page: str, partial: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    """The full page, or only ``partial`` when htmx asked (the page template includes the same partial)."""
    template = partial if getattr(request, "htmx", False) else page
    return render(request, template, context, status=status)


class TenantConsoleView(LoginRequiredMixin, View):
    """Base of every ``/t/<tenant>/...`` page. Subclasses set the roles; the tenant and principal are resolved here."""

    read_role: ClassVar[str] = Role.VIEWER
    write_role: ClassVar[str] = Role.MEMBER

    tenant: Tenant
    principal: Principal

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        writes = request.method not in SAFE_METHODS
        try:
            access = tenant_access(
                str(kwargs.get("tenant", "")),
                user=request.user,
                key=None,
                required_role=self.write_role if writes else self.read_role,
                writes=writes,
            )
        except NotFound as exc:
            raise Http404(exc.message) from exc
        except Forbidden as exc:
            raise PermissionDenied(exc.message) from exc
        self.tenant, self.principal = access.tenant, access.principal
        return super().dispatch(request, *args, **kwargs)

    def can(self, role: str) -> bool:
        """Whether the signed-in user holds ``role`` here (and the tenant accepts changes)."""
        return role_at_least(self.principal.role, role) and (self.tenant.is_active or self.principal.is_staff)

    @property
    def request_id(self) -> str:
        return str(getattr(self.request, "request_id", "") or "")

    def base_context(self, **extra: Any) -> dict[str, Any]:
        """Context shared by every tenant page: who is here, what they may do, the switcher."""
        return {
            "tenant": self.tenant,
            "role": self.principal.role,
            "is_staff": self.principal.is_staff,
            "can_write": self.can(Role.MEMBER),
            "can_admin": self.can(Role.ADMIN),
            "can_see_keys": role_at_least(self.principal.role, Role.MEMBER),
            "can_see_audit": role_at_least(self.principal.role, Role.ADMIN),
            **nav_context(self.request),
            **extra,
        }


def home(request: HttpRequest) -> HttpResponse:
    """``/``: staff go to the staff pages, everyone else to their first tenant."""
    if not request.user.is_authenticated:
        return redirect("login")
    if request.user.is_staff:
        # ``staff-home`` is in quotas/console_urls.py, which console_urls.py always includes: no fallback needed.
        return redirect("staff-home")
    tenants = nav_tenants(request)
    if tenants:
        return redirect("console-overview", tenant=tenants[0]["slug"])
    return render(request, "tenants/no_tenant.html", nav_context(request))
