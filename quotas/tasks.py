"""Celery tasks of the quotas app. Names are the contract (controlplane/settings.py CELERY_BEAT_SCHEDULE)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from celery import shared_task
from django.db import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from quotas.rollup import RollupConfig, run_rollup
from quotas.usage_retention import prune_usage

_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OperationalError)


@shared_task(name="quotas.rollup_usage", acks_late=True, reject_on_worker_lost=True, expires=30, ignore_result=True)
def rollup_usage_task(
    max_seconds: float | None = None, batch_size: int | None = None, claim_idle_ms: int | None = None
) -> dict[str, Any]:
    """One bounded rollup run (beat starts one every few seconds; no retry: the next run picks up the rest)."""
    config = RollupConfig.from_settings(max_seconds=max_seconds, batch_size=batch_size, claim_idle_ms=claim_idle_ms)
    return asdict(run_rollup(config))


@shared_task(
    name="quotas.prune_usage_seen",
    acks_late=True,
    reject_on_worker_lost=True,
    expires=3600,
    ignore_result=True,
    autoretry_for=_TRANSIENT,
    retry_backoff=True,
    max_retries=3,
)
def prune_usage_seen_task() -> dict[str, Any]:
    """Forget request ids older than the retention and trim acknowledged old usage stream entries."""
    return asdict(prune_usage())
