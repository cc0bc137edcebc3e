"""Celery tasks of the Batch API: prepare a batch, run it, and the periodic tick that keeps every open batch moving.

``batches.prepare`` and ``batches.run`` go to the batch queue (``FRONTDOOR_BATCH_QUEUE``), consumed by the batch
workers (``python -m batches.worker``), so a long batch never delays a reconcile or a tick. Runs take turns: each
works for a slice (``slice_seconds``: the same time per tenant per round) and then sends its successor to the back
of the queue. Both tasks can run twice and be killed anywhere (``batches.execution`` says why nothing is answered
twice). One run per batch is wanted at a time: a Redis marker (``batch_runner_key``, set when a run is sent,
refreshed while it works, gone when it stops or after it died) decides whether the tick sends another.
``batches.tick`` (beat) expires batches past their window, sends a run to every open batch without one, and deletes
files past their retention.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone
from redis.exceptions import RedisError

from batches import execution, storage
from batches.models import Batch, BatchFile
from controlplane.contracts.redis_names import batch_runner_key
from controlplane.redis import get_redis, redis_prefix

log = logging.getLogger("frontdoor.batches.tasks")

PREPARE_TASK = "batches.prepare"
RUN_TASK = "batches.run"
_COMMON = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": True,
    "retry_backoff_max": 30,
    "max_retries": 5,
}


def _runner_ttl_s() -> int:
    return int(settings.FRONTDOOR_BATCH_TASK_SECONDS + settings.FRONTDOOR_BATCH_CLAIM_S) + 1


def _send(task: str, batch_id: int) -> None:
    from controlplane.celery import app

    try:
        app.send_task(
            task,
            args=[batch_id],
            queue=settings.FRONTDOOR_BATCH_QUEUE,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.1},
        )
    except Exception:  # the broker is down: the tick sends it again
        log.exception("could not send %s for batch %s; the tick will", task, batch_id)


def enqueue_prepare(batch_id: int) -> None:
    _send(PREPARE_TASK, batch_id)


def enqueue_run(batch_id: int, *, force: bool = False) -> bool:
    """Send a run unless one is marked as working on the batch (``force``: a run handing over to its successor)."""
    try:
        client = get_redis()
        key = batch_runner_key(redis_prefix(), batch_id)
        if force:
            client.set(key, "queued", ex=_runner_ttl_s())
        elif not client.set(key, "queued", nx=True, ex=_runner_ttl_s()):
            return False
    except RedisError:
        log.warning("batch %s: runner marker unavailable; sending a run anyway", batch_id)
    _send(RUN_TASK, batch_id)
    return True


@shared_task(name=PREPARE_TASK, **_COMMON)
def prepare(batch_id: int) -> None:
    execution.prepare(batch_id)
    enqueue_run(batch_id)


def slice_seconds(batch_id: int) -> float:
    """How long one run of this batch works before handing over: ``FRONTDOOR_BATCH_TASK_SECONDS`` shared among its
    tenant's running batches. Runs take turns on the queue, so every tenant gets the same time per round whatever
    the number or size of its batches: one tenant's 50,000-line file does not starve another's 100 lines."""
    tenant_id = Batch.unscoped_objects.filter(pk=batch_id).values_list("tenant_id", flat=True).first()
    running = Batch.unscoped_objects.filter(tenant_id=tenant_id, status__in=Batch.OPEN).count() if tenant_id else 1
    return settings.FRONTDOOR_BATCH_TASK_SECONDS / max(running, 1)


@shared_task(name=RUN_TASK, **_COMMON)
def run(batch_id: int) -> None:
    key = batch_runner_key(redis_prefix(), batch_id)
    get_redis().set(key, "running", ex=_runner_ttl_s())
    more = execution.run(batch_id, slice_seconds(batch_id))
    if more:
        enqueue_run(batch_id, force=True)
    else:
        get_redis().delete(key)


@shared_task(name="batches.tick", acks_late=False, ignore_result=True)
def tick() -> None:
    now = timezone.now()
    for batch_id in Batch.unscoped_objects.filter(status=Batch.Status.IN_PROGRESS, expires_at__lte=now).values_list(
        "pk", flat=True
    ):
        execution.begin_ending(batch_id, Batch.Ending.EXPIRED)
    stale = now - timedelta(seconds=30)
    for batch_id in Batch.unscoped_objects.filter(status=Batch.Status.VALIDATING, created_at__lte=stale).values_list(
        "pk", flat=True
    ):
        enqueue_prepare(batch_id)  # its prepare was lost (broker down, worker killed before the ack)
    for batch_id in Batch.unscoped_objects.filter(
        status__in=(Batch.Status.IN_PROGRESS, Batch.Status.FINALIZING, Batch.Status.CANCELLING)
    ).values_list("pk", flat=True):
        enqueue_run(batch_id)
    prune_files(now)


def prune_files(now: object = None) -> int:
    """Delete files past their retention (content first, then the row); returns how many went."""
    moment = now or timezone.now()
    gone = 0
    for found in BatchFile.unscoped_objects.filter(expires_at__lte=moment)[:500]:
        storage.delete(found.storage_name)
        found.delete()
        gone += 1
    return gone
