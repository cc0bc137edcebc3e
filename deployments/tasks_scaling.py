"""Periodic tasks of autoscaling, SLO collection/evaluation, canary rollouts, and the SLO webhook.

The periodic ones are cheap and never pile up: each expires before its next period would send another copy,
and a Redis lock (``SET NX EX``, released only by its owner) makes a tick that finds another one still running
return at once. Beat entries (controlplane/settings.py ``CELERY_BEAT_SCHEDULE``)::

    "autoscale-tick": {"task": "deployments.autoscale_tick", "schedule": 2.0, "options": {"expires": 1.5}},
    "collect-slo": {"task": "deployments.collect_slo", "schedule": 10.0, "options": {"expires": 8.0}},
    "rollout-tick": {"task": "deployments.rollout_tick", "schedule": 10.0, "options": {"expires": 8.0}},
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from celery import shared_task
from django.db import InterfaceError, OperationalError

from controlplane.redis import get_redis, redis_key

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Deletes the lock only if it still holds our token (a lock that expired and was retaken is not ours to free).
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end"


@contextmanager
def tick_lock(name: str, ttl_s: int) -> Iterator[bool]:
    """Yields True when this process holds the tick's lock, False when another tick is running."""
    client = get_redis()
    key = redis_key("lock", name)
    token = uuid.uuid4().hex
    acquired = bool(client.set(key, token, nx=True, ex=ttl_s))
    try:
        yield acquired
    finally:
        if acquired:
            client.eval(_RELEASE, 1, key, token)


def _locked_run(name: str, ttl_s: int, work: Callable[[], T]) -> T | None:
    with tick_lock(name, ttl_s) as acquired:
        if not acquired:
            logger.info("%s skipped: the previous tick is still running", name)
            return None
        return work()


_PERIODIC: dict[str, Any] = {"acks_late": False, "ignore_result": True}  # a lost tick is replaced by the next one


@shared_task(name="deployments.autoscale_tick", expires=1.5, **_PERIODIC)
def autoscale_tick() -> dict[str, Any] | None:
    """Scale every ``kpa`` deployment (every 2 s)."""
    from deployments import autoscale

    result = _locked_run("autoscale", 10, autoscale.tick)
    if result is None:
        return None
    return {"deployments": result.deployments, "changed": {str(k): list(v) for k, v in result.changed.items()}}


def collect_and_evaluate() -> dict[str, int]:
    """Write new SLO samples, downsample, prune, then evaluate burn rates."""
    from deployments import slo, sloeval

    counts = {"samples": slo.collect(), "downsampled": slo.downsample(), "pruned": slo.prune()}
    counts.update(sloeval.evaluate_all())
    return counts


@shared_task(name="deployments.collect_slo", expires=8.0, **_PERIODIC)
def collect_slo() -> dict[str, int] | None:
    """SLO samples and evaluation (every 10 s)."""
    return _locked_run("collect_slo", 60, collect_and_evaluate)


@shared_task(name="deployments.rollout_tick", expires=8.0, **_PERIODIC)
def rollout_tick() -> dict[str, str] | None:
    """Advance canary rollouts (every 10 s)."""
    from deployments import rollout

    result = _locked_run("rollout", 60, rollout.tick)
    return None if result is None else {str(k): v for k, v in result.items()}


@shared_task(
    name="deployments.send_webhook",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    max_retries=3,
    expires=300,
)
def send_webhook(tenant_id: int, payload: dict[str, Any]) -> str:
    """POST an SLO notice to the tenant's webhook (re-read now: a URL removed meanwhile gets nothing)."""
    from deployments.models_slo import TenantSettings
    from deployments.webhooks import WebhookRefused
    from deployments.webhooks import send_webhook as post

    found = TenantSettings.objects.for_tenant(tenant_id).first()
    if found is None or not found.webhook_url:
        return "no webhook"
    try:
        result = post(found.webhook_url, payload, secret=found.webhook_secret)
    except WebhookRefused as exc:
        logger.warning("webhook of tenant %s refused: %s", tenant_id, exc)
        return f"refused: {exc}"
    if not result.delivered:
        logger.warning("webhook of tenant %s not delivered: %s %s", tenant_id, result.status, result.detail)
    return f"{result.status} {result.detail}"
