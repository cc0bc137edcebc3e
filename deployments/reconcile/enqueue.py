"""Ask the workers to reconcile a deployment (or a tenant), once the change that needs it has committed.

The tasks are sent by name (``deployments.reconcile_deployment``, ``deployments.reconcile_tenant``), so the web
process never imports worker code.
A change rolled back enqueues nothing. A broker that is down costs a log line, never the request: the periodic
resync (``deployments.resync_all``) reconciles every deployment anyway.
"""

from __future__ import annotations

import logging
from functools import partial

from django.db import transaction

RECONCILE_TASK = "deployments.reconcile_deployment"
RECONCILE_TENANT_TASK = "deployments.reconcile_tenant"
# A reconcile request older than this is stale (a newer one or the resync has covered it).
RECONCILE_EXPIRES_S = 300
# Bounded retries: a request must not hang on a broker that is down.
_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.2}

logger = logging.getLogger(__name__)


def _send(task: str, object_id: int) -> bool:
    from controlplane.celery import app

    try:
        app.send_task(
            task,
            args=[object_id],
            expires=RECONCILE_EXPIRES_S,
            retry=True,
            retry_policy=_PUBLISH_RETRY_POLICY,
        )
    except Exception:  # any broker failure: the resync catches up, so the caller's request still succeeds
        logger.exception("could not enqueue %s for %s; the periodic resync will", task, object_id)
        return False
    return True


def send_reconcile(deployment_id: int) -> bool:
    """Send the reconcile task now; returns False (and logs) when the broker refused it."""
    return _send(RECONCILE_TASK, deployment_id)


def send_reconcile_tenant(tenant_id: int) -> bool:
    """Send the tenant reconcile (namespace, ResourceQuota, NetworkPolicy) now; False when the broker refused it."""
    return _send(RECONCILE_TENANT_TASK, tenant_id)


def enqueue_reconcile(deployment_id: int) -> None:
    """Send the reconcile task after the current transaction commits (at once when there is none)."""
    transaction.on_commit(partial(send_reconcile, deployment_id))


def enqueue_reconcile_tenant(tenant_id: int) -> None:
    """Send the tenant reconcile after the current transaction commits (a quota change: the ResourceQuota follows)."""
    transaction.on_commit(partial(send_reconcile_tenant, tenant_id))
