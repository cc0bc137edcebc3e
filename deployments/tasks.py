"""Celery tasks of the deployments app: reconcile passes, and the periodic ticks of autoscaling, SLO collection
and canary rollouts, plus the SLO webhook.

Reconcile tasks can run twice: ids in, rows re-read, a missing row is done.

Transient failures (Kubernetes connection errors, 409/429/5xx, a lost database connection) are retried with capped
exponential backoff; a permanent backend error is written to the deployment as ``Degraded`` and not retried.
Late acks plus ``reject_on_worker_lost`` give a task whose worker was killed back to the queue, and the advisory
lock in ``reconcile_deployment`` keeps the redelivered copy from racing a live one.

A pass that ends ``progressing`` (replicas starting, a deletion waiting for processes to stop) sends itself again a
couple of seconds later, a bounded number of times, so a new deployment is routable within seconds rather than at
the next periodic resync.

The periodic ones are cheap and never pile up: each expires before its next period would send another copy,
and a Redis lock (``SET NX EX``, released only by its owner) makes a tick that finds another one still running
return at once. Beat entries (controlplane/settings.py ``CELERY_BEAT_SCHEDULE``)::

    "autoscale-tick": {"task": "deployments.autoscale_tick", "schedule": 2.0, "options": {"expires": 1.5}},
    "collect-slo": {"task": "deployments.collect_slo", "schedule": 10.0, "options": {"expires": 8.0}},
    "rollout-tick": {"task": "deployments.rollout_tick", "schedule": 10.0, "options": {"expires": 8.0}},
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from celery import Task, shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from controlplane.redis import get_redis, redis_key
from deployments.backends import get_backend
from deployments.backends.base import TransientBackendError
from deployments.reconcile import engine as reconcile
from tenants.models import Tenant

logger = logging.getLogger(__name__)

RETRYABLE = (TransientBackendError, OperationalError, InterfaceError, RedisConnectionError)
_COMMON = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": RETRYABLE,
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    # After these the periodic resync takes over: a failing deployment never loops a worker forever.
    "max_retries": 8,
    "expires": 300,
}

# A progressing pass looks again this much later, at most FOLLOW_UPS times in a row (about 20 s); after that the
# periodic resync carries on. Passes sent by the resync start no follow-ups, so a deployment stuck waiting for
# capacity costs one pass per resync, not a pass every 2 s.
FOLLOW_UP_COUNTDOWN_S = 2.0
FOLLOW_UPS = 10
# On Kubernetes each resync also revisits this fraction (1/N) of the ready deployments, each once every N resyncs.
KUBERNETES_READY_SLICES = 10


@shared_task(name="deployments.reconcile_deployment", bind=True, **_COMMON)
def reconcile_deployment(self: Task, deployment_id: int, follow_ups: int = FOLLOW_UPS) -> str:
    """Converge one deployment; returns the outcome (converged, progressing, degraded, deleted, busy, missing).

    ``follow_ups``: how many more passes a ``progressing`` outcome may send (2 s apart); 0 sends none.
    """
    result = reconcile.reconcile_deployment(int(deployment_id), get_backend())
    logger.info(
        "reconciled deployment %s: %s (db writes %d, api calls %d, api writes %d)",
        deployment_id, result.outcome, result.db_writes, result.api_calls, result.api_writes,
    )
    if result.outcome == "progressing" and follow_ups > 0:
        # Back to the queue this pass came from (workers may be routed per queue); the default one otherwise.
        queue = (self.request.delivery_info or {}).get("routing_key")
        send_follow_up(int(deployment_id), follow_ups - 1, queue=queue)
    return result.outcome


def send_follow_up(deployment_id: int, follow_ups: int, queue: str | None = None) -> None:
    """Look at a progressing deployment again shortly; a broker hiccup only costs the wait for the resync."""
    options = {"queue": queue} if queue else {}
    try:
        reconcile_deployment.apply_async(
            args=[deployment_id],
            kwargs={"follow_ups": follow_ups},
            countdown=FOLLOW_UP_COUNTDOWN_S,
            expires=FOLLOW_UP_COUNTDOWN_S + 60,
            **options,
        )
    except Exception:  # any broker failure: the periodic resync picks the deployment up anyway
        logger.exception("could not send a follow-up reconcile for deployment %s", deployment_id)


@shared_task(name="deployments.reconcile_tenant", **_COMMON)
def reconcile_tenant(tenant_id: int) -> bool:
    """Apply a tenant's namespace, ResourceQuota and NetworkPolicy (after a quota change, or periodically)."""
    return reconcile.reconcile_tenant(int(tenant_id), get_backend())


def ready_slice(backend: str, now: float | None = None) -> tuple[int, int]:
    """Which ready deployments this resync revisits: all of them locally, a rotating tenth on Kubernetes.

    Locally a revisit is one Redis round trip and replicas can move (a port, a dead agent), so every resync looks.
    On Kubernetes a revisit is 5 list calls, endpoints are Service names that do not move, and the Deployment
    controller replaces crashed pods, so only ready counts drift: a tenth per resync keeps them fresh within
    ``KUBERNETES_READY_SLICES`` resyncs for a tenth of the API reads.
    """
    if backend == "local":
        return (0, 1)
    period = max(float(settings.FRONTDOOR_RESYNC_SECONDS), 1.0)
    index = int((time.time() if now is None else now) // period)
    return (index % KUBERNETES_READY_SLICES, KUBERNETES_READY_SLICES)


@shared_task(name="deployments.resync_all", acks_late=True, expires=60)
def resync_all() -> dict[str, int]:
    """Enqueue a reconcile for every tenant and every deployment that is not converged; writes nothing itself."""
    deployment_ids = reconcile.deployments_needing_reconcile(ready_slice(settings.FRONTDOOR_BACKEND))
    tenant_ids = list(Tenant.objects.order_by("pk").values_list("pk", flat=True))
    for tenant_id in tenant_ids:
        reconcile_tenant.apply_async(args=[tenant_id], expires=60)
    for deployment_id in deployment_ids:
        # No follow-ups: the next resync is the follow-up of a deployment that stays progressing.
        reconcile_deployment.apply_async(args=[deployment_id], kwargs={"follow_ups": 0}, expires=300)
    return {"tenants": len(tenant_ids), "deployments": len(deployment_ids)}


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
    from deployments.scaling import tick as autoscale

    result = _locked_run("autoscale", 10, autoscale.tick)
    if result is None:
        return None
    return {"deployments": result.deployments, "changed": {str(k): list(v) for k, v in result.changed.items()}}


def collect_and_evaluate() -> dict[str, int]:
    """Write new SLO samples, downsample, prune, then evaluate burn rates."""
    from deployments.slo import collect as slo
    from deployments.slo import evaluate as sloeval

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
    from controlplane.webhooks import WebhookRefused
    from controlplane.webhooks import send_webhook as post
    from tenants.models import TenantSettings

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
