"""Django admin for quotas (edited through the same service as the API) and read-only usage rollups."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from quotas.models import NAMESPACE_FIELDS, QUOTA_FIELDS, Quota, UsageEventSeen, UsageRollup
from tenants import services
from tenants.admin import acting


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    # The limits that fit a column; the GPU map and the namespace's size are on the change form.
    list_display = [
        "tenant",
        *(name for name in QUOTA_FIELDS if name != "gpus" and name not in NAMESPACE_FIELDS),
        "updated_at",
    ]
    search_fields = ["tenant__slug"]
    list_select_related = ["tenant"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Quota]:
        return Quota.objects.unscoped().select_related("tenant")

    def save_model(self, request: HttpRequest, obj: Quota, form: Any, change: bool) -> None:
        if not change:
            super().save_model(request, obj, form, change)
            return
        stored = Quota.objects.unscoped().get(pk=obj.pk)
        changes = {name: getattr(obj, name) for name in form.changed_data}
        services.update_quota(stored, changes=changes, **acting(request))


@admin.register(UsageRollup)
class UsageRollupAdmin(admin.ModelAdmin):
    list_display = [
        "minute",
        "tenant",
        "api_key",
        "deployment_name",
        "requests",
        "errors",
        "prompt_tokens",
        "completion_tokens",
        "inferences",
        "images",
    ]
    list_filter = ["tenant"]
    list_select_related = ["tenant", "api_key"]
    date_hierarchy = "minute"

    def get_queryset(self, request: HttpRequest) -> QuerySet[UsageRollup]:
        return UsageRollup.objects.unscoped().select_related("tenant", "api_key")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(UsageEventSeen)
class UsageEventSeenAdmin(admin.ModelAdmin):
    list_display = ["request_id", "seen_at"]
    search_fields = ["request_id"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
