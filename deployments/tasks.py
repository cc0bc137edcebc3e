"""Celery tasks of the reconciler. They can run twice (STYLE.md item 5): ids in, rows re-read, a missing row is done.

Transient failures (Kubernetes connection errors, 409/429/5xx, a lost database connection) are retried with capped
exponential backoff; a permanent backend error is written to the deployment as ``Degraded`` and not retried.
Late acks plus ``reject_on_worker_lost`` give a task whose worker was killed back to the queue, and the advisory
lock in ``reconcile_deployment`` keeps the redelivered copy from racing a live one.
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import InterfaceError, OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from deployments import reconcile
from deployments.backends import get_backend
from deployments.backends.base import TransientBackendError
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


@shared_task(name="deployments.reconcile_deployment", **_COMMON)
def reconcile_deployment(deployment_id: int) -> str:
    """Converge one deployment; returns the outcome (converged, progressing, degraded, deleted, busy, missing)."""
    result = reconcile.reconcile_deployment(int(deployment_id), get_backend())
    logger.info(
        "reconciled deployment %s: %s (db writes %d, api calls %d, api writes %d)",
        deployment_id, result.outcome, result.db_writes, result.api_calls, result.api_writes,
    )
    return result.outcome


@shared_task(name="deployments.reconcile_tenant", **_COMMON)
def reconcile_tenant(tenant_id: int) -> bool:
    """Apply a tenant's namespace, ResourceQuota and NetworkPolicy (after a quota change, or periodically)."""
    return reconcile.reconcile_tenant(int(tenant_id), get_backend())


@shared_task(name="deployments.resync_all", acks_late=True, expires=60)
def resync_all() -> dict[str, int]:
    """Enqueue a reconcile for every tenant and every deployment that is not converged; writes nothing itself."""
    deployment_ids = reconcile.deployments_needing_reconcile()
    tenant_ids = list(Tenant.objects.order_by("pk").values_list("pk", flat=True))
    for tenant_id in tenant_ids:
        reconcile_tenant.apply_async(args=[tenant_id], expires=60)
    for deployment_id in deployment_ids:
        reconcile_deployment.apply_async(args=[deployment_id], expires=300)
    return {"tenants": len(tenant_ids), "deployments": len(deployment_ids)}
