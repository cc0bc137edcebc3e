"""Tenant, member, API-key and audit routes under /api/v1 (all but the first are tenant-scoped)."""

from django.urls import path

from tenants import api

T = "tenants/<str:tenant>"

urlpatterns = [
    path("tenants/", api.TenantListViewSet.as_view({"get": "list", "post": "create"}), name="tenant-list"),
    path(
        f"{T}/",
        api.TenantDetailViewSet.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
        name="tenant-detail",
    ),
    path(f"{T}/suspend/", api.TenantDetailViewSet.as_view({"post": "suspend"}), name="tenant-suspend"),
    path(f"{T}/resume/", api.TenantDetailViewSet.as_view({"post": "resume"}), name="tenant-resume"),
    path(f"{T}/members/", api.MemberViewSet.as_view({"get": "list", "post": "create"}), name="member-list"),
    path(
        f"{T}/members/<str:username>/",
        api.MemberViewSet.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
        name="member-detail",
    ),
    path(f"{T}/keys/", api.ApiKeyViewSet.as_view({"get": "list", "post": "create"}), name="apikey-list"),
    path(
        f"{T}/keys/<str:key_id>/",
        api.ApiKeyViewSet.as_view({"get": "retrieve", "patch": "partial_update"}),
        name="apikey-detail",
    ),
    path(f"{T}/keys/<str:key_id>/revoke/", api.ApiKeyViewSet.as_view({"post": "revoke"}), name="apikey-revoke"),
    path(f"{T}/audit-events/", api.AuditEventViewSet.as_view({"get": "list"}), name="auditevent-list"),
    path(f"{T}/audit-events/<str:pk>/", api.AuditEventViewSet.as_view({"get": "retrieve"}), name="auditevent-detail"),
]

# The tenant's notification settings (SLO webhook): tenants/settings_api.py.
from tenants import settings_api  # noqa: E402 - appended route block

urlpatterns += [
    path(
        f"{T}/settings/",
        settings_api.TenantSettingsViewSet.as_view({"get": "retrieve", "put": "update", "patch": "partial_update"}),
        name="tenant-settings",
    ),
    path(
        f"{T}/settings/rotate-secret/",
        settings_api.TenantSettingsViewSet.as_view({"post": "rotate_secret"}),
        name="tenant-settings-rotate-secret",
    ),
]
