"""Quota routes under /api/v1."""

from django.urls import path

from quotas.api import QuotaViewSet

quota = QuotaViewSet.as_view({"get": "retrieve", "put": "update", "patch": "partial_update"})

urlpatterns = [
    path("tenants/<str:tenant>/quota/", quota, name="tenant-quota"),
]
