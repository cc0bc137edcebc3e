"""Quota routes under /api/v1."""

from django.urls import path

from quotas.api import QuotaViewSet
from quotas.usage_api import UsageViewSet

quota = QuotaViewSet.as_view({"get": "retrieve", "put": "update", "patch": "partial_update"})

urlpatterns = [
    path("tenants/<str:tenant>/quota/", quota, name="tenant-quota"),
    path("tenants/<str:tenant>/usage/", UsageViewSet.as_view({"get": "retrieve"}), name="tenant-usage"),
]
