"""Housekeeping for tenant-side records."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from tenants.models import IdempotencyRecord


@shared_task(name="tenants.prune_idempotency_records", acks_late=True, expires=3600)
def prune_idempotency_records() -> int:
    """Forget Idempotency-Key records past their retention; a retry after that executes anew."""
    cutoff = timezone.now() - timedelta(seconds=settings.FRONTDOOR_IDEMPOTENCY_RETENTION_S)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted
