"""Console pages for API keys, members, invitations, the audit log and the tenant's settings. Changes go through
``tenants.services`` (the functions the REST API calls), ``tenants.invitations`` and ``tenants.webhook_settings``;
roles match the REST API's: keys are read by members and managed by admins, members are listed to everyone
and managed by admins, the audit log and the settings are for admins.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views import View

from controlplane.audit import describe_event
from controlplane.console import (
    TenantConsoleView,
    console_refusal,
    nav_context,
    paginate,
    query_without_page,
    render_page_or_partial,
    show_refusal,
)
from controlplane.domain_errors import DomainError, Invalid
from controlplane.webhooks import WebhookRefused, check_webhook_url
from tenants import invitations, key_reveal, services, webhook_settings
from tenants.models import (
    KEY_NAME_MAX_LENGTH,
    ApiKey,
    AuditEvent,
    Invitation,
    Membership,
    Role,
    Scope,
    TenantSettings,
)
from tenants.sso.backend import password_sign_in_enabled
from tenants.sso.provider import current as current_sso


def _request_id(request: HttpRequest) -> str:
    """The request's id for the audit events of pages outside a tenant (``TenantConsoleView.request_id`` inside)."""
    return str(getattr(request, "request_id", "") or "")


# ---------------------------------------------------------------- API keys


class KeyForm(forms.Form):
    name = forms.CharField(max_length=KEY_NAME_MAX_LENGTH, help_text="unique among this tenant's unrevoked keys")
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices,
        initial=[Scope.INFERENCE],
        widget=forms.CheckboxSelectMultiple,
        help_text="inference: call models; read: read this tenant's API; manage: change it",
    )
    expires_on = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date"}), help_text="empty = never expires"
    )
    requests_per_minute = forms.IntegerField(min_value=1, required=False, help_text="empty = the tenant's limit")
    batch_requests_per_minute = forms.IntegerField(
        min_value=1,
        max_value=2_147_483_647,
        required=False,
        help_text="its batch lines' own requests/min; empty = the tenant's batch limit",
    )

    def clean_expires_on(self) -> Any:
        value = self.cleaned_data.get("expires_on")
        if value is not None and value <= timezone.localdate():
            raise ValidationError("pick a date after today")
        return value


class KeyListView(TenantConsoleView):
    """The keys and the form for a new one. A new key is issued by POST, which redirects here; the GET after it
    shows the key once (``tenants.key_reveal``), so reloading that page neither issues another key nor shows it
    again."""

    read_role = Role.MEMBER
    write_role = Role.ADMIN

    def _render(self, form: KeyForm, status: int = 200, **extra: Any) -> HttpResponse:
        keys = ApiKey.objects.for_tenant(self.tenant).select_related("created_by")
        if self.request.GET.get("show") != "revoked":
            keys = keys.filter(revoked_at__isnull=True)
        context = self.base_context(
            page=paginate(self.request, keys),
            form=form,
            now=timezone.now(),
            query=query_without_page(self.request),
            show=self.request.GET.get("show", ""),
            **extra,
        )
        return render_page_or_partial(
            self.request, "tenants/keys.html", "tenants/partials/key_table.html", context, status=status
        )

    def get(self, request: HttpRequest, tenant: str) -> HttpResponse:
        # Only the full page shows a new key: an htmx refresh of the table must not use it up unseen.
        held = None if getattr(request, "htmx", False) else key_reveal.take_for_reveal(request.session, self.tenant)
        if held is None:
            return self._render(KeyForm())
        key_id, new_key = held
        created_key = ApiKey.objects.for_tenant(self.tenant).filter(key_id=key_id).first()
        response = self._render(KeyForm(), created_key=created_key, new_key=new_key)
        response["Cache-Control"] = "no-store"  # the key is in this one answer; keep it out of caches and history
        return response

    def post(self, request: HttpRequest, tenant: str) -> HttpResponse:
        form = KeyForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            expires = data["expires_on"]
            try:
                key, full_key = services.issue_key(
                    self.tenant,
                    name=data["name"],
                    scopes=list(data["scopes"]),
                    created_by=request.user if isinstance(request.user, User) else None,
                    expires_at=timezone.make_aware(datetime.combine(expires, time.min)) if expires else None,
                    requests_per_minute=data["requests_per_minute"],
                    batch_requests_per_minute=data["batch_requests_per_minute"],
                    actor=self.principal,
                    request_id=self.request_id,
                )
            except DomainError as exc:
                show_refusal(form, exc)
            else:
                key_reveal.hold_for_reveal(request.session, key, full_key)
                return redirect("console-keys", tenant=self.tenant.slug)
        return self._render(form, status=422)


class KeyRevokeView(TenantConsoleView):
    read_role = Role.ADMIN
    write_role = Role.ADMIN

    def post(self, request: HttpRequest, tenant: str, key_id: str) -> HttpResponse:
        key = ApiKey.objects.for_tenant(self.tenant).filter(key_id=key_id).select_related("tenant").first()
        if key is None:
            raise Http404("no such key")
        if services.revoke_key(key, actor=self.principal, request_id=self.request_id):
            messages.success(request, f"Key {key.name} revoked; the gateway refuses it within seconds.")
        return redirect("console-keys", tenant=self.tenant.slug)


# ---------------------------------------------------------------- members and invitations


class AddMemberForm(forms.Form):
    user = forms.CharField(label="Username or email", max_length=254)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)

    def clean_user(self) -> User:
        value = self.cleaned_data["user"].strip()
        matches = list(User.objects.filter(Q(username=value) | Q(email__iexact=value), is_active=True)[:2])
        if len(matches) != 1:
            raise ValidationError(
                "no single active user has that username or email; invite them by email instead"
                if not matches
                else "several users share that email; use the username"
            )
        return matches[0]


class InviteForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=[(r, r.capitalize()) for r in invitations.INVITABLE_ROLES], initial=Role.MEMBER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class MemberListView(TenantConsoleView):
    read_role = Role.VIEWER
    write_role = Role.ADMIN

    def _render(self, status: int = 200, **extra: Any) -> HttpResponse:
        members = Membership.objects.for_tenant(self.tenant).select_related("user").order_by("user__username")
        open_invites = (
            Invitation.objects.for_tenant(self.tenant)
            .filter(accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now())
            .select_related("invited_by")
            if self.can(Role.ADMIN)
            else []
        )
        context = self.base_context(
            page=paginate(self.request, members),
            invitations=open_invites,
            roles=Role.choices,
            add_form=extra.pop("add_form", None) or AddMemberForm(),
            invite_form=extra.pop("invite_form", None) or InviteForm(),
            query=query_without_page(self.request),
            **extra,
        )
        return render_page_or_partial(
            self.request, "tenants/members.html", "tenants/partials/member_table.html", context, status=status
        )

    def get(self, request: HttpRequest, tenant: str) -> HttpResponse:
        return self._render()

    def post(self, request: HttpRequest, tenant: str) -> HttpResponse:
        """Add an existing user (``action=add``) or invite by email (``action=invite``)."""
        if request.POST.get("action") == "invite":
            invite_form = InviteForm(request.POST)
            if invite_form.is_valid():
                try:
                    _, token = invitations.create_invitation(
                        self.tenant,
                        email=invite_form.cleaned_data["email"],
                        role=invite_form.cleaned_data["role"],
                        invited_by=request.user if isinstance(request.user, User) else None,
                        actor=self.principal,
                        request_id=self.request_id,
                    )
                except DomainError as exc:
                    show_refusal(invite_form, exc)
                else:
                    link = request.build_absolute_uri(reverse("console-invitation", kwargs={"token": token}))
                    return self._render(status=201, invite_link=link, invited=invite_form.cleaned_data["email"])
            return self._render(status=422, invite_form=invite_form)
        add_form = AddMemberForm(request.POST)
        if add_form.is_valid():
            user = add_form.cleaned_data["user"]
            try:
                services.add_member(
                    self.tenant,
                    user=user,
                    role=add_form.cleaned_data["role"],
                    actor=self.principal,
                    request_id=self.request_id,
                )
            except DomainError as exc:
                show_refusal(add_form, exc)
            else:
                messages.success(request, f"{user.get_username()} added.")
                return redirect("console-members", tenant=self.tenant.slug)
        return self._render(status=422, add_form=add_form)


class MemberChangeView(TenantConsoleView):
    """``action=role`` changes a member's role, ``action=remove`` removes them (both through the services)."""

    read_role = Role.ADMIN
    write_role = Role.ADMIN

    def post(self, request: HttpRequest, tenant: str, username: str) -> HttpResponse:
        membership = (
            Membership.objects.for_tenant(self.tenant).filter(user__username=username).select_related("user", "tenant")
        ).first()
        if membership is None:
            raise Http404("no such member")
        try:
            if request.POST.get("action") == "remove":
                services.remove_member(membership, actor=self.principal, request_id=self.request_id)
                messages.success(request, f"{username} removed.")
            else:
                form = RoleForm(request.POST)
                if not form.is_valid():
                    raise Invalid({"role": ["pick a role"]})
                role = form.cleaned_data["role"]
                services.change_role(membership, role=role, actor=self.principal, request_id=self.request_id)
                messages.success(request, f"{username} is now {membership.role}.")
        except DomainError as exc:
            messages.error(request, console_refusal(exc).message)
        return redirect("console-members", tenant=self.tenant.slug)


class InvitationRevokeView(TenantConsoleView):
    read_role = Role.ADMIN
    write_role = Role.ADMIN

    def post(self, request: HttpRequest, tenant: str, pk: int) -> HttpResponse:
        invitation = Invitation.objects.for_tenant(self.tenant).filter(pk=pk).select_related("tenant").first()
        if invitation is None:
            raise Http404("no such invitation")
        invitations.revoke_invitation(invitation, actor=self.principal, request_id=self.request_id)
        messages.success(request, f"Invitation of {invitation.email} withdrawn.")
        return redirect("console-members", tenant=self.tenant.slug)


class SignUpForm(forms.Form):
    """An invitee without an account picks a username and password; the service applies Django's validators."""

    username = forms.CharField(max_length=150, help_text="letters, digits and @/./+/-/_ only")
    password = forms.CharField(widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}), strip=False)
    password_again = forms.CharField(
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}), strip=False, label="Password (again)"
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("password") and data.get("password") != data.get("password_again"):
            self.add_error("password_again", "the two passwords differ")
        return data


class InvitationAcceptView(View):
    """``/invite/<token>/``: what the invitation grants. Signed in (as the invitee), POST accepts it. Signed out:
    someone whose email has an account is sent to sign in; anyone else gets a username + password form that makes
    the account and accepts in one go (``invitations.accept_invitation_as_new_user``)."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = super().dispatch(request, *args, **kwargs)
        # The URL carries the token: requests from this page send only the origin as Referer, never the path.
        # ("no-referrer" would do too, but Chromium then sends "Origin: null" with the form, which CSRF refuses.)
        response.headers["Referrer-Policy"] = "strict-origin"
        return response

    def _invalid(self, error: str, status: int) -> HttpResponse:
        context = {"invitation": None, "error": error, **nav_context(self.request)}
        return render(self.request, "tenants/invitation.html", context, status=status)

    def _signed_out(self, invitation: Invitation, form: SignUpForm | None, status: int = 200) -> HttpResponse | None:
        """The sign-up page, or None when the invited email already has an account (then sign in instead).

        With single sign-on the page offers the provider first (signing in there with the invited address accepts
        the invitation); with password sign-in off it offers nothing else: no password account can be made here.
        """
        if invitations.account_exists(invitation.email):
            return None
        sso = current_sso()
        context: dict[str, Any] = {
            "invitation": invitation,
            "sso_name": sso.provider_name if sso is not None else "",
            "invite_path": self.request.get_full_path(),
            **nav_context(self.request),
        }
        if password_sign_in_enabled():
            context["signup_form"] = form or SignUpForm()
        return render(self.request, "tenants/invitation.html", context, status=status)

    def get(self, request: HttpRequest, token: str) -> HttpResponse:
        try:
            invitation = invitations.find_open_invitation(token)
        except invitations.InvitationInvalid as exc:
            return self._invalid(str(exc), 404)
        if not request.user.is_authenticated:
            return self._signed_out(invitation, None) or redirect_to_login(request.get_full_path())
        return render(request, "tenants/invitation.html", {"invitation": invitation, **nav_context(request)})

    def post(self, request: HttpRequest, token: str) -> HttpResponse:
        if not request.user.is_authenticated:
            return self._sign_up(request, token)
        assert isinstance(request.user, User)
        try:
            membership = invitations.accept_invitation(token, user=request.user, request_id=_request_id(request))
        except invitations.InvitationInvalid as exc:
            return self._invalid(str(exc), 409)
        messages.success(request, f"Welcome to {membership.tenant.name}.")
        return redirect("console-overview", tenant=membership.tenant.slug)

    def _sign_up(self, request: HttpRequest, token: str) -> HttpResponse:
        if not password_sign_in_enabled():  # the provider makes accounts then: a password one would get round it
            raise PermissionDenied("Password sign-in is turned off: sign in with single sign-on to accept.")
        try:
            invitation = invitations.find_open_invitation(token)
        except invitations.InvitationInvalid as exc:
            return self._invalid(str(exc), 409)
        form = SignUpForm(request.POST)
        if not invitations.account_exists(invitation.email) and form.is_valid():
            try:
                membership = invitations.accept_invitation_as_new_user(
                    token,
                    username=form.cleaned_data["username"],
                    password=form.cleaned_data["password"],
                    request_id=_request_id(request),
                )
            except DomainError as exc:
                show_refusal(form, exc)
            except invitations.InvitationInvalid as exc:
                return self._invalid(str(exc), 409)
            else:
                login(request, membership.user)
                messages.success(request, f"Welcome to {membership.tenant.name}.")
                return redirect("console-overview", tenant=membership.tenant.slug)
        return self._signed_out(invitation, form, status=422) or redirect_to_login(request.get_full_path())


# ---------------------------------------------------------------- audit log


class AuditLogView(TenantConsoleView):
    read_role = Role.ADMIN
    write_role = Role.OWNER

    def get(self, request: HttpRequest, tenant: str) -> HttpResponse:
        events = AuditEvent.objects.for_tenant(self.tenant).select_related("actor", "actor_key")
        names = ("action", "actor", "object_type", "request", "since", "until")
        filters = {k: request.GET.get(k, "").strip() for k in names}
        if filters["action"]:
            events = events.filter(action__startswith=filters["action"])
        if filters["actor"]:
            events = events.filter(Q(actor__username=filters["actor"]) | Q(actor_key__key_id=filters["actor"]))
        if filters["object_type"]:
            events = events.filter(object_type=filters["object_type"])
        if filters["request"]:
            events = events.filter(request_id=filters["request"])
        for name, lookup in (("since", "created_at__date__gte"), ("until", "created_at__date__lte")):
            try:
                if filters[name]:
                    events = events.filter(**{lookup: datetime.strptime(filters[name], "%Y-%m-%d").date()})
            except ValueError:
                filters[name] = ""
        page = paginate(request, events)
        context = self.base_context(
            page=page,
            entries=[(event, describe_event(event)) for event in page],
            filters=filters,
            query=query_without_page(request),
            actions=list(
                AuditEvent.objects.for_tenant(self.tenant)
                .order_by("action")
                .values_list("action", flat=True)
                .distinct()[:100]
            ),
        )
        return render_page_or_partial(request, "tenants/audit.html", "tenants/partials/audit_table.html", context)


# ---------------------------------------------------------------- settings (SLO webhook)


class WebhookForm(forms.Form):
    webhook_url = forms.URLField(
        label="SLO webhook URL",
        max_length=500,
        required=False,
        assume_scheme="https",
        help_text="public http(s) URL that gets SLO breaches and recoveries as signed JSON; empty = no webhook",
    )

    def clean_webhook_url(self) -> str:
        """The SLO sender's own check (``check_webhook_url``), as the REST API applies it: refusals are field errors."""
        url: str = self.cleaned_data.get("webhook_url") or ""
        if url:
            try:
                check_webhook_url(url)
            except WebhookRefused as exc:
                raise ValidationError(str(exc)) from exc
        return url


class TenantSettingsView(TenantConsoleView):
    """``action=save`` sets or clears the webhook URL, ``action=rotate`` replaces the signing secret. Both call
    ``webhook_settings.set_webhook``/``rotate_webhook_secret`` (the REST settings API's functions), which audit."""

    read_role = Role.ADMIN
    write_role = Role.ADMIN

    def _render(self, form: WebhookForm | None = None, status: int = 200, **extra: Any) -> HttpResponse:
        row = TenantSettings.of(self.tenant)
        form = form or WebhookForm(initial={"webhook_url": row.webhook_url})
        context = self.base_context(settings_row=row, form=form, secret_set=bool(row.webhook_secret), **extra)
        response = render(self.request, "tenants/settings.html", context, status=status)
        if "new_secret" in extra:
            response["Cache-Control"] = "no-store"  # the secret is in this one response; keep it out of caches
        return response

    def get(self, request: HttpRequest, tenant: str) -> HttpResponse:
        return self._render()

    def post(self, request: HttpRequest, tenant: str) -> HttpResponse:
        action = request.POST.get("action", "")
        if action == "rotate":
            _, new_secret = webhook_settings.rotate_webhook_secret(
                self.tenant, actor=self.principal, request_id=self.request_id
            )
            if new_secret is None:
                return self._render(
                    status=409, action_error="Set a webhook URL first; its signing secret is made then."
                )
            return self._render(new_secret=new_secret, reveal="rotated")
        if action != "save":
            return self._render(status=422, action_error=f"unknown action {action!r}")
        form = WebhookForm(request.POST)
        if not form.is_valid():
            return self._render(form, status=422)
        url = form.cleaned_data["webhook_url"]
        _, new_secret = webhook_settings.set_webhook(self.tenant, url, actor=self.principal, request_id=self.request_id)
        if new_secret is not None:
            return self._render(new_secret=new_secret, reveal="created")
        messages.success(request, "Webhook saved." if url else "Webhook removed; its signing secret was dropped.")
        return redirect("console-settings", tenant=self.tenant.slug)
