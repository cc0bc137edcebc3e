"""The snapshot's Celery task. Its name predates this package and stays (beat schedules and queued messages)."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from controlplane.snapshot.publisher import publish_config

_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OperationalError)


@shared_task(
    name="quotas.publish_config",
    acks_late=True,
    reject_on_worker_lost=True,
    expires=120,
    ignore_result=True,
    autoretry_for=_TRANSIENT,
    retry_backoff=True,
    max_retries=3,
)
def publish_config_task() -> int:
    """Republish the gateway's config snapshot (safety net behind the on-commit publish)."""
    return publish_config()
