"""The snapshot's Celery tasks, routed to their own queue (``FRONTDOOR_SNAPSHOT_QUEUE``).

``quotas.publish_config`` predates this package and keeps its name (beat schedules and queued messages).
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.db import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from controlplane.contracts.redis_names import config_publish_queued_key
from controlplane.contracts.snapshot import ALL_SECTIONS
from controlplane.redis import get_redis, redis_prefix
from controlplane.snapshot.coalesce import mark_dirty, run_publisher

_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OperationalError)
_OPTIONS = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
    "autoretry_for": _TRANSIENT,
    "retry_backoff": True,
    "max_retries": 3,
}


@shared_task(name="snapshot.publish", expires=60, **_OPTIONS)
def publish_dirty_task() -> int:
    """Publish the sections commits marked dirty, coalesced, until none are left; returns the builds it made."""
    client = get_redis()
    # First, so that a commit marking from now on queues the next run (this one may already have taken its marks).
    client.delete(config_publish_queued_key(redis_prefix()))
    return run_publisher(client, interval_s=settings.FRONTDOOR_SNAPSHOT_INTERVAL_S).builds


@shared_task(name="quotas.publish_config", expires=120, **_OPTIONS)
def publish_config_task() -> int:
    """Rebuild every section (the safety net behind the commits' marks); unchanged ones are not rewritten."""
    client = get_redis()
    mark_dirty(client, [ALL_SECTIONS])
    return run_publisher(client, interval_s=settings.FRONTDOOR_SNAPSHOT_INTERVAL_S).builds
