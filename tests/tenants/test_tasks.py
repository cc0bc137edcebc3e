"""Housekeeping tasks of the tenants app."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tenants.models import IdempotencyRecord
from tenants.tasks import prune_idempotency_records

pytestmark = pytest.mark.django_db


def record(key: str, age: timedelta) -> IdempotencyRecord:
    row = IdempotencyRecord.objects.create(
        principal="user:1", key=key, method="POST", path="/api/v1/x/", body_sha256="0" * 64, status_code=201
    )
    IdempotencyRecord.objects.filter(pk=row.pk).update(created_at=timezone.now() - age)
    return row


def test_it_prunes_only_idempotency_records_past_retention(settings) -> None:
    settings.FRONTDOOR_IDEMPOTENCY_RETENTION_S = 3600
    record("old", timedelta(hours=2))
    fresh = record("fresh", timedelta(minutes=5))
    assert prune_idempotency_records() == 1
    assert list(IdempotencyRecord.objects.values_list("pk", flat=True)) == [fresh.pk]
