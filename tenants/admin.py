"""Django admin for tenants, memberships, API keys, audit events and idempotency records.

Admin writes go through ``tenants.services`` where a rule lives there (a new tenant gets its quota; status
changes are audited), with the signed-in staff user as their actor (only staff reach the admin). API keys cannot
be added here: a key only exists through ``ApiKey.issue`` (API or console), which shows the secret once; the admin
never shows or edits ``secret_hash``.
"""

from __future__ import annotations

from typing import Any, TypedDict

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from controlplane.access import Principal, staff_principal
from tenants import services
from tenants.models import ApiKey, AuditEvent, IdempotencyRecord, Invitation, Membership, Tenant, TenantSettings


class Acting(TypedDict):
    """The services' ``actor`` and ``request_id`` keywords for one admin request."""

    actor: Principal | None
    request_id: str


def acting(request: HttpRequest) -> Acting:
    """The signed-in staff user as the actor (only staff reach the admin), and the request's id."""
    user_id = request.user.pk
    assert user_id is not None, "the admin serves signed-in staff only"
    return Acting(actor=staff_principal(user_id), request_id=str(getattr(request, "request_id", "") or ""))


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "status", "created_at"]
    list_filter = ["status"]
    search_fields = ["slug", "name"]
    readonly_fields = ["status", "created_at", "updated_at"]
    inlines = [MembershipInline]
    actions = ["suspend", "resume"]

    def get_readonly_fields(self, request: HttpRequest, obj: Tenant | None = None) -> Any:
        # The slug names the tenant's namespace and its gateway config: fixed once created.
        return [*self.readonly_fields, "slug"] if obj is not None else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: Tenant, form: Any, change: bool) -> None:
        if change:
            services.update_tenant(obj, name=obj.name, **acting(request))
        else:
            created = services.create_tenant(slug=obj.slug, name=obj.name, **acting(request))
            obj.pk = created.pk

    def delete_model(self, request: HttpRequest, obj: Tenant) -> None:
        services.delete_tenant(obj, **acting(request))

    @admin.action(description="Suspend the selected tenants")
    def suspend(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        changed = sum(services.suspend_tenant(tenant, **acting(request)) for tenant in queryset)
        self.message_user(request, f"{changed} tenant(s) suspended", messages.SUCCESS)

    @admin.action(description="Resume the selected tenants")
    def resume(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        changed = sum(services.resume_tenant(tenant, **acting(request)) for tenant in queryset)
        self.message_user(request, f"{changed} tenant(s) resumed", messages.SUCCESS)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["tenant", "user", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["tenant__slug", "user__username", "user__email"]
    autocomplete_fields = ["user", "tenant"]
    list_select_related = ["tenant", "user"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Membership]:
        return Membership.objects.unscoped().select_related("tenant", "user")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["key_id", "name", "tenant", "scopes", "created_at", "last_used_at", "expires_at", "revoked_at"]
    list_filter = ["revoked_at", "env"]
    search_fields = ["key_id", "name", "tenant__slug"]
    list_select_related = ["tenant"]
    exclude = ["secret_hash"]
    readonly_fields = ["key_id", "env", "tenant", "scopes", "created_by", "created_at", "last_used_at", "revoked_at"]
    fields = [
        "tenant",
        "name",
        "key_id",
        "env",
        "scopes",
        "requests_per_minute",
        "tokens_per_minute",
        "max_concurrent_requests",
        "expires_at",
        "created_by",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    actions = ["revoke"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiKey]:
        return ApiKey.objects.unscoped().select_related("tenant")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # keys are issued only through ApiKey.issue (API or console), which shows the secret once

    def delete_model(self, request: HttpRequest, obj: ApiKey) -> None:
        # Deleting would lose the audit trail's key reference; revoking keeps it and stops the key.
        services.revoke_key(obj, **acting(request))

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = sum(services.revoke_key(key, **acting(request)) for key in queryset.select_related("tenant"))
        self.message_user(request, f"{revoked} key(s) revoked", messages.SUCCESS)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records written only by the system: viewable, never edited by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "tenant", "action", "object_type", "object_id", "actor", "actor_key", "request_id"]
    list_filter = ["action", "object_type"]
    search_fields = ["object_id", "object_repr", "request_id", "tenant__slug", "actor__username"]
    list_select_related = ["tenant", "actor", "actor_key"]
    date_hierarchy = "created_at"

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditEvent]:
        return AuditEvent.objects.unscoped().select_related("tenant", "actor", "actor_key")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the audit trail is append-only


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "principal", "key", "method", "path", "status_code"]
    search_fields = ["principal", "key", "path"]
    exclude = ["response_body"]  # an API-key create response holds the secret until the record expires


@admin.register(Invitation)
class InvitationAdmin(ReadOnlyAdmin):
    """Invitations are made and accepted in the console; the admin shows them (never the token)."""

    list_display = ["created_at", "tenant", "email", "role", "expires_at", "accepted_at", "revoked_at"]
    list_filter = ["role"]
    search_fields = ["email", "tenant__slug"]
    exclude = ["token_hash"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Invitation]:
        return Invitation.objects.unscoped().select_related("tenant")


@admin.register(TenantSettings)
class TenantSettingsAdmin(admin.ModelAdmin):
    list_display = ["tenant", "webhook_url"]
    exclude = ["webhook_secret"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[TenantSettings]:
        return TenantSettings.objects.unscoped().select_related("tenant")
