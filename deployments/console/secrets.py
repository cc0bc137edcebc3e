"""Console page for a tenant's secrets, ``/t/<tenant>/secrets/``: everyone in the tenant sees the names, kinds,
versions, registry logins and the deployments that use each one (never a value); admins create, rotate and delete
them. Every change goes through ``deployments.secrets`` (the REST API's functions), which audit it and enqueue the
reconciles.

The page takes every change at its one URL as ``action=create|rotate|delete``, the secret named by ``name``, as the
settings page does. A value is write-only: its input is a password field, which Django never renders with a value
(after a refusal neither), and no response carries it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import messages
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect

from controlplane.console import (
    TenantConsoleView,
    console_refusal,
    paginate,
    query_without_page,
    render_page_or_partial,
    show_refusal,
)
from controlplane.domain_errors import DomainError
from deployments import secrets
from deployments.models import TenantSecret
from deployments.models.secret import SECRET_NAME_MAX_LENGTH
from tenants.models import Role

_REGISTRY_ONLY = "kind 'registry' only"


def _value_input() -> forms.PasswordInput:
    # render_value=False (the default) is the point: a value typed in never comes back in a page.
    return forms.PasswordInput(attrs={"autocomplete": "new-password", "spellcheck": "false"})


class SecretForm(forms.Form):
    """A new secret; the rules (name, registry host, size of the value) are the service's, shown on the fields."""

    name = forms.CharField(
        max_length=SECRET_NAME_MAX_LENGTH,
        help_text="lower-case letters, digits and '-'; deployments refer to the secret by it, and it cannot change",
    )
    kind = forms.ChoiceField(
        choices=TenantSecret.Kind.choices,
        initial=TenantSecret.Kind.GENERIC,
        help_text="generic: a value for a deployment's secret environment or upstream key; "
        "registry: a login every pod of the tenant pulls images with",
    )
    value = forms.CharField(
        strip=False,
        widget=_value_input(),
        help_text="write-only: never shown again; for kind 'registry', the password or token",
    )
    registry_server = forms.CharField(
        max_length=260, required=False, label="Registry host", help_text=f"{_REGISTRY_ONLY}: e.g. ghcr.io"
    )
    registry_username = forms.CharField(
        max_length=255, required=False, label="Registry user", help_text=f"{_REGISTRY_ONLY}: the user it logs in as"
    )


class RotateForm(forms.Form):
    """A new value for one secret; a registry login may also change its host or user and keep its value."""

    value = forms.CharField(strip=False, required=False, label="New value", widget=_value_input())
    registry_server = forms.CharField(max_length=260, required=False, label="Registry host")
    registry_username = forms.CharField(max_length=255, required=False, label="Registry user")

    def __init__(self, *args: Any, secret: TenantSecret, **kwargs: Any) -> None:
        # One form per row: the secret's name keeps the inputs' ids apart (names are DNS labels, valid in an id).
        kwargs.setdefault("auto_id", f"id_rotate_{secret.name}_%s")
        kwargs.setdefault(
            "initial", {"registry_server": secret.registry_server, "registry_username": secret.registry_username}
        )
        super().__init__(*args, **kwargs)
        self.secret = secret
        if secret.kind == TenantSecret.Kind.REGISTRY:
            self.fields["value"].help_text = "empty = keep the password or token"
        else:
            del self.fields["registry_server"], self.fields["registry_username"]
            self.fields["value"].required = True
            self.fields["value"].error_messages["required"] = "enter the new value"

    def changes(self) -> dict[str, Any]:
        """``update_secret``'s keyword arguments: None leaves a field as it is."""
        data = self.cleaned_data
        changes: dict[str, Any] = {"value": data["value"] or None}
        if self.secret.kind == TenantSecret.Kind.REGISTRY:
            changes |= {"registry_server": data["registry_server"], "registry_username": data["registry_username"]}
        return changes


@dataclass(frozen=True)
class SecretRow:
    secret: TenantSecret
    used_by: list[str]
    rotate_form: RotateForm | None  # None for those who may not change secrets


class SecretListView(TenantConsoleView):
    """The list, and admins' changes: ``action=create``, or ``action=rotate``/``action=delete`` of ``name``."""

    read_role = Role.VIEWER
    write_role = Role.ADMIN

    def _secrets(self) -> QuerySet[TenantSecret]:
        return TenantSecret.objects.for_tenant(self.tenant).order_by("name")

    def _render(
        self,
        *,
        form: SecretForm | None = None,
        rotate_form: RotateForm | None = None,
        status: int = 200,
        **extra: Any,
    ) -> HttpResponse:
        page = paginate(self.request, self._secrets())
        admin = self.can(Role.ADMIN)

        def row_form(secret: TenantSecret) -> RotateForm | None:
            """The row's rotate form: the refused one, with its errors, on its own row."""
            if not admin:
                return None
            if rotate_form is not None and rotate_form.secret.pk == secret.pk:
                return rotate_form
            return RotateForm(secret=secret)

        users = secrets.users_by_secret(self.tenant.pk)
        rows = [SecretRow(secret, users.get(secret.name, []), row_form(secret)) for secret in page]
        context = self.base_context(
            page=page,
            rows=rows,
            form=form or SecretForm(),
            query=query_without_page(self.request),
            **extra,
        )
        return render_page_or_partial(
            self.request, "deployments/secrets.html", "deployments/partials/secret_table.html", context, status=status
        )

    def get(self, request: HttpRequest, tenant: str) -> HttpResponse:
        return self._render()

    def post(self, request: HttpRequest, tenant: str) -> HttpResponse:
        action = request.POST.get("action", "")
        if action == "create":
            return self._create(request)
        if action not in {"rotate", "delete"}:
            return self._render(status=422, action_error=f"unknown action {action!r}")
        secret = self._secrets().filter(name=request.POST.get("name", "")).select_related("tenant").first()
        if secret is None:
            raise Http404("no such secret")
        return self._rotate(request, secret) if action == "rotate" else self._delete(request, secret)

    def _create(self, request: HttpRequest) -> HttpResponse:
        form = SecretForm(request.POST)
        status = 422
        if form.is_valid():
            data = form.cleaned_data
            try:
                secret = secrets.create_secret(
                    self.tenant,
                    name=data["name"],
                    kind=data["kind"],
                    value=data["value"],
                    registry_server=data["registry_server"],
                    registry_username=data["registry_username"],
                    actor=self.principal,
                    request_id=self.request_id,
                )
            except DomainError as exc:
                show_refusal(form, exc)
                status = console_refusal(exc).status
            else:
                messages.success(request, f"Secret {secret.name} created.")
                return redirect("console-secrets", tenant=self.tenant.slug)
        return self._render(form=form, status=status)

    def _rotate(self, request: HttpRequest, secret: TenantSecret) -> HttpResponse:
        form = RotateForm(request.POST, secret=secret)
        status = 422
        if form.is_valid():
            try:
                updated = secrets.update_secret(
                    secret, **form.changes(), actor=self.principal, request_id=self.request_id
                )
            except DomainError as exc:
                show_refusal(form, exc)
                status = console_refusal(exc).status
            else:
                if updated.version == secret.version:
                    messages.info(request, f"Secret {secret.name} is unchanged.")
                else:
                    messages.success(
                        request,
                        f"Secret {secret.name} is at version {updated.version}; what uses it picks it up shortly.",
                    )
                return redirect("console-secrets", tenant=self.tenant.slug)
        return self._render(rotate_form=form, status=status)

    def _delete(self, request: HttpRequest, secret: TenantSecret) -> HttpResponse:
        try:
            secrets.delete_secret(secret, actor=self.principal, request_id=self.request_id)
        except DomainError as exc:
            refusal = console_refusal(exc)
            return self._render(status=refusal.status, action_error=refusal.message)
        messages.success(request, f"Secret {secret.name} deleted.")
        return redirect("console-secrets", tenant=self.tenant.slug)
