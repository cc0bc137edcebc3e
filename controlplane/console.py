"""The console's scoping chokepoint: one place that turns ``/t/<slug>/...`` into a tenant and a role.

The decision is ``controlplane.access.tenant_access``, the one the REST API takes: a signed-out visitor is sent to
the sign-in page, someone with no access to the tenant gets a 404 (never a 403 that confirms the tenant exists),
a role too weak for the page or the action gets a 403, and a suspended tenant refuses changes except from staff.

Views are ``TenantConsoleView`` subclasses with ``read_role``/``write_role``; ``self.tenant``, ``self.principal`` and
the template context (``tenant``, ``role``, ``can_write``, ``nav_tenants`` …) are set before the handler runs.
``render_page_or_partial``: the full page, or only its partial when the request comes from htmx; a partial carries
the messages waiting for the next page in the ``X-Console-Messages`` header (``messages_for_htmx``), which
static/console/console.js shows where the htmx request was made, so they never pile up on the next page.

A service's refusal (``controlplane.domain_errors``) is shown through ``console_refusal``/``show_refusal``, the one
place the console maps them: the REST API's statuses (``controlplane.errors``), except ``Invalid``, which is 422
here as for every refused form; a one-line message (the field messages joined for ``Invalid``); field messages.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from django import forms
from django.contrib.auth.mixins import LoginRequiredMixin
from django.contrib.messages import get_messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.views import View

from controlplane.access import Principal, principal_for, tenant_access
from controlplane.domain_errors import DomainError, Forbidden, Invalid, NotFound
from controlplane.errors import domain_status
from tenants.models import Membership, Role, Tenant, role_at_least

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PAGE_SIZE = 50
INVALID_STATUS = 422
MESSAGES_HEADER = "X-Console-Messages"


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
    if getattr(request, "htmx", False):
        return messages_for_htmx(request, render(request, partial, context, status=status))
    return render(request, page, context, status=status)


def messages_for_htmx(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """Move the messages waiting for the next page onto ``response`` as ``[{"level", "text"}]`` JSON in a header.

    A partial has no place of its own for them; left waiting they would show on the next page, stacked up (an htmx
    POST that redirects is followed by an htmx GET of the partial). JSON's ASCII escapes keep the header valid.
    """
    pending = [{"level": message.level_tag, "text": str(message)} for message in get_messages(request)]
    if pending:
        response[MESSAGES_HEADER] = json.dumps(pending)
    return response


@dataclass(frozen=True)
class ConsoleRefusal:
    """A service's refusal as a console page shows it."""

    status: int
    message: str
    fields: dict[str, list[str]] = field(default_factory=dict)  # empty unless the input itself was refused


def _messages(value: Any) -> list[str]:
    """A field's messages as strings, nested ones flattened in order."""
    if isinstance(value, dict):
        return [message for item in value.values() for message in _messages(item)]
    if isinstance(value, list | tuple):
        return [message for item in value for message in _messages(item)]
    return [str(value)]


def console_refusal(exc: DomainError) -> ConsoleRefusal:
    """The status, the one-line message and the field messages of a service's refusal."""
    if isinstance(exc, Invalid):
        fields = {str(name): _messages(messages) for name, messages in exc.fields.items()}
        joined = "; ".join(message for messages in fields.values() for message in messages)
        return ConsoleRefusal(INVALID_STATUS, joined or exc.message, fields)
    return ConsoleRefusal(domain_status(exc), exc.message)


def show_refusal(
    form: forms.Form, exc: DomainError, *, field_for: Callable[[str, str], str | None] | None = None
) -> None:
    """Put a service's refusal on ``form``: each field message on its field, the rest on the whole form.

    ``field_for(name, message)`` says which form field a field message belongs on (None: the whole form); without
    it, the field of the same name when the form has one.
    """
    refusal = console_refusal(exc)
    if not refusal.fields:
        form.add_error(None, refusal.message)
        return
    for name, messages in refusal.fields.items():
        if field_for is None:
            form.add_error(name if name in form.fields else None, messages)
        else:
            for message in messages:
                form.add_error(field_for(name, message), message)


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
