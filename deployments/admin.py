"""Django admin for deployments. Admin is staff-only, so it reads every tenant's rows, explicitly unscoped."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from deployments.models import SYSTEM_FIELDS, DeploymentEvent, ModelDeployment, Revision, Rollout, SloSample, SloStatus


class RevisionInline(admin.TabularInline):
    model = Revision
    extra = 0
    can_delete = False
    fields = ["number", "weight", "spec_hash", "spec", "desired_replicas", "ready_replicas", "created_at"]
    readonly_fields = ["number", "weight", "spec_hash", "spec", "desired_replicas", "ready_replicas", "created_at"]

    # Revisions and their weights change only through deployments.services (audit, quota, reconcile).
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ModelDeployment)
class ModelDeploymentAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "tenant",
        "runtime",
        "model",
        "gpu_type",
        "gpu_count",
        "status",
        "desired_state",
        "ready_replicas",
        "max_replicas",
        "generation",
        "observed_generation",
    ]
    list_filter = ["status", "runtime", "desired_state", "gpu_type"]
    search_fields = ["name", "model", "tenant__slug"]
    list_select_related = ["tenant"]
    readonly_fields = [*SYSTEM_FIELDS]
    inlines = [RevisionInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelDeployment]:
        return ModelDeployment.objects.unscoped().select_related("tenant")


@admin.register(Revision)
class RevisionAdmin(admin.ModelAdmin):
    list_display = ["__str__", "deployment", "number", "weight", "ready_replicas", "created_at"]
    readonly_fields = [
        "deployment",
        "number",
        "spec",
        "spec_hash",
        "weight",
        "endpoints",
        "desired_replicas",
        "ready_replicas",
        "created_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    search_fields = ["deployment__name", "deployment__tenant__slug"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Revision]:
        return Revision.objects.unscoped().select_related("deployment__tenant")


@admin.register(DeploymentEvent)
class DeploymentEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "tenant", "deployment", "kind", "reason", "message"]
    list_filter = ["kind", "reason"]
    search_fields = ["deployment__name", "tenant__slug", "reason", "message"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[DeploymentEvent]:
        return DeploymentEvent.objects.unscoped().select_related("tenant", "deployment")


class SystemRecordAdmin(admin.ModelAdmin):
    """Rows the workers write (SLO samples and state, rollouts): viewable, not edited by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(SloSample)
class SloSampleAdmin(SystemRecordAdmin):
    list_display = ["interval_start", "deployment", "revision", "resolution", "requests", "errors", "p95_ms"]
    list_select_related = ["deployment"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[SloSample]:
        return SloSample.objects.unscoped().select_related("deployment")


@admin.register(SloStatus)
class SloStatusAdmin(SystemRecordAdmin):
    list_display = ["deployment"]


@admin.register(Rollout)
class RolloutAdmin(SystemRecordAdmin):
    list_display = ["deployment", "status"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Rollout]:
        return Rollout.objects.unscoped().select_related("deployment")
