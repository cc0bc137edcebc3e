"""Deployment and revision routes under /api/v1 (filled by the deployments API)."""

from django.urls import URLPattern, URLResolver

urlpatterns: list[URLPattern | URLResolver] = []
