"""Frontdoor control plane: Django settings, URLs, Celery app and the tenant-scoped API base."""

from .celery import app as celery_app

__all__ = ["celery_app"]
