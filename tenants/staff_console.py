"""The staff page that creates a tenant: ``/staff/tenants/new/`` (staff only, like every ``StaffView``).

Slug, name, the owner's e-mail address and a starting quota (the quota editor's own form, with the platform's
defaults filled in) go to ``tenants.onboarding.create_tenant_for_owner`` in one transaction; the owner's invitation
is then mailed. Refusals come back as 422 with every message on its field and the input kept. When the e-mail cannot
be sent the tenant stays created and the page hands staff the link to pass on themselves.
"""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib import messages
from django.contrib.auth.models import User
from django.core.validators import RegexValidator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from controlplane.access import staff_principal
from controlplane.console import console_refusal
from controlplane.domain_errors import DomainError
from quotas.console import QuotaForm, StaffView
from quotas.models import Quota
from tenants import onboarding
from tenants.models import Tenant

SLUG_RULE = RegexValidator(
    regex=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    message="Use lowercase letters, digits and hyphens, starting and ending with a letter or digit (e.g. acme-labs).",
)


class TenantCreateForm(forms.Form):
    """The new tenant and its first owner; the model and the services check the same rules again."""

    slug = forms.CharField(
        max_length=40,
        validators=[SLUG_RULE],
        help_text="Names the tenant in URLs and its Kubernetes namespace; it never changes. At most 40 characters.",
        error_messages={"max_length": "Keep the slug to 40 characters or fewer (it has %(show_value)d)."},
    )
    name = forms.CharField(max_length=200, help_text="Shown in the console; the owner can rename it later.")
    owner_email = forms.EmailField(
        max_length=254,
        label="Owner's e-mail",
        help_text="Gets an invitation link to become the tenant's owner (valid for 7 days, for this address only).",
    )

    def clean_slug(self) -> str:
        slug = str(self.cleaned_data["slug"]).strip()
        if Tenant.objects.filter(slug=slug).exists():
            raise forms.ValidationError(f"A tenant with the slug '{slug}' already exists; choose another.")
        return slug


# A refusal from the services names its field as the model does: where each lands on the page.
_TENANT_FIELDS = {"slug": "slug", "name": "name", "email": "owner_email"}


def show_creation_refusal(exc: DomainError, tenant_form: TenantCreateForm, quota_form: QuotaForm) -> None:
    """Put a service's refusal on the field it concerns, in whichever of the two forms holds it."""
    refusal = console_refusal(exc)
    if not refusal.fields:
        tenant_form.add_error(None, refusal.message)
        return
    for name, field_messages in refusal.fields.items():
        for message in field_messages:
            if name in _TENANT_FIELDS:
                tenant_form.add_error(_TENANT_FIELDS[name], message)
            elif (quota_field := quota_form.field_for(name, message)) is not None:
                quota_form.add_error(quota_field, message)
            else:
                tenant_form.add_error(None, message)


class StaffTenantCreateView(StaffView):
    """``/staff/tenants/new/``: create a tenant, its starting quota and its owner's invitation."""

    def _render(self, tenant_form: TenantCreateForm, quota_form: QuotaForm, status: int = 200) -> HttpResponse:
        context = self.base_context(tenant_form=tenant_form, quota_form=quota_form)
        return render(self.request, "tenants/staff_tenant_create.html", context, status=status)

    def get(self, request: HttpRequest) -> HttpResponse:
        return self._render(TenantCreateForm(), QuotaForm(initial=QuotaForm.initial_from(Quota())))

    def post(self, request: HttpRequest) -> HttpResponse:
        staff = cast(User, request.user)  # StaffView lets signed-in staff users only this far
        tenant_form = TenantCreateForm(request.POST)
        quota_form = QuotaForm(request.POST)
        # Both forms are checked before either is used, so every mistake shows at once.
        valid = [tenant_form.is_valid(), quota_form.is_valid()]
        if all(valid):
            try:
                new = onboarding.create_tenant_for_owner(
                    slug=tenant_form.cleaned_data["slug"],
                    name=tenant_form.cleaned_data["name"],
                    owner_email=tenant_form.cleaned_data["owner_email"],
                    quota=quota_form.changes(),
                    invited_by=staff,
                    actor=staff_principal(staff.pk),
                    request_id=self.request_id,
                )
            except DomainError as exc:
                show_creation_refusal(exc, tenant_form, quota_form)
            else:
                return self._created(new)
        return self._render(tenant_form, quota_form, status=422)

    def _created(self, new: onboarding.NewTenant) -> HttpResponse:
        link = self.request.build_absolute_uri(reverse("console-invitation", kwargs={"token": new.token}))
        email = new.invitation.email
        if onboarding.send_owner_invitation(new, link=link):
            messages.success(self.request, f"Tenant {new.tenant.slug} created; its owner's invitation went to {email}.")
            return redirect("staff-quota", slug=new.tenant.slug)
        # The tenant exists: the one copy of the link is shown here, once, for staff to pass on.
        context: dict[str, Any] = self.base_context(new_tenant=new.tenant, email=email, link=link)
        response = render(self.request, "tenants/staff_tenant_unsent.html", context)
        response["Cache-Control"] = "no-store"
        return response
