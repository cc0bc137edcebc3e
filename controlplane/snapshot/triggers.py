"""Mark the gateway's snapshot dirty after every commit that changes what the gateway needs, and ask for a publisher.

One mark per transaction, naming the sections (tenants) it changed, sent by the committing process right after
COMMIT: one ``SADD``, and the publisher task queued unless one already is. The publisher (``coalesce.run_publisher``)
runs on its own queue (``FRONTDOOR_SNAPSHOT_QUEUE``) that reconcile and batch work never fill, so a revocation reaches
every gateway within 2 s however busy the workers are. ``FRONTDOOR_SNAPSHOT_PUBLISH=inline`` runs the same
publisher in the committing process instead (one process, no worker; the test suite). A failed mark is logged, not
raised: the change is committed, and the periodic ``quotas.publish_config`` task rebuilds every section within a
minute.

Signals do not see ``QuerySet.update()``; code that changes these models with ``update()`` sends
``controlplane.signals.bulk_change`` (as ``ApiKey.revoke`` does, since a model may not import this module) or, above
the models, calls ``request_publish()`` itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.db import DatabaseError, models, transaction
from django.db.models.signals import post_delete, post_save
from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from controlplane.contracts.redis_names import (
    config_dirty_key,
    config_publish_queued_key,
    config_publisher_lock_key,
)
from controlplane.contracts.snapshot import ALL_SECTIONS, tenant_section
from controlplane.redis import get_redis, redis_prefix
from controlplane.signals import bulk_change
from controlplane.snapshot.publisher import PROJECTED_FIELDS
from deployments.models import ModelDeployment, Revision
from quotas.models import Quota
from tenants.models import ApiKey, Tenant

log = logging.getLogger("frontdoor.quotas.publish")

# How long a queued publish task counts as pending: a commit queues another once it is older (its worker is gone).
QUEUED_TTL_S = 30
# A task queued this long ago that has not started, with no publisher running, means its worker is down or stuck: the
# committing process then publishes itself, so revocations still reach the gateways in time.
QUEUE_STALE_S = 1.0


def _names_and_attnames(model: type[models.Model], names: tuple[str, ...]) -> frozenset[str]:
    """Each field's name and attname (``tenant`` and ``tenant_id``): ``update_fields`` may give either."""
    attnames = (getattr(model._meta.get_field(name), "attname", name) for name in names)
    return frozenset((*names, *attnames))


# The fields the snapshot projects, per model (the publisher's own list). A save(update_fields=...) touching none of
# them publishes nothing (the reconciler's status writes, last_used_at, names).
SNAPSHOT_FIELDS: dict[type[models.Model], frozenset[str]] = {
    model: _names_and_attnames(model, names) for model, names in PROJECTED_FIELDS.items()
}

# The tenant whose section a changed row belongs to.
_TENANT_OF: dict[type[models.Model], Callable[[Any], int | None]] = {
    ApiKey: lambda key: key.tenant_id,
    Tenant: lambda tenant: tenant.pk,
    Quota: lambda quota: quota.tenant_id,
    ModelDeployment: lambda deployment: deployment.tenant_id,
    Revision: lambda revision: _deployment_tenant(revision.deployment_id),
}


def _deployment_tenant(deployment_id: int) -> int | None:
    """A revision's tenant: its deployment's (None, every section, when that row is gone already)."""
    rows = ModelDeployment.unscoped_objects.filter(pk=deployment_id).values_list("tenant_id", flat=True)
    return next(iter(rows), None)


def mark_now(sections: Iterable[str]) -> None:
    """Mark ``sections`` dirty and make sure a publisher runs; log (never raise) a failure."""
    names = sorted(set(sections))
    try:
        client = get_redis()
        if settings.FRONTDOOR_SNAPSHOT_PUBLISH == "queue" and _mark_and_queue(client, names):
            return
        # Inline, or no publisher worker is consuming its queue: this process publishes.
        from controlplane.snapshot.coalesce import mark_dirty, run_publisher

        mark_dirty(client, names)
        run_publisher(client, interval_s=settings.FRONTDOOR_SNAPSHOT_INTERVAL_S)
    except (RedisError, OSError, DatabaseError, KombuError):
        log.exception("config publish failed; the periodic quotas.publish_config task will republish")
    except Exception:
        # The change is already committed: failing the caller now would report a failure that did not happen.
        log.exception("config publish failed unexpectedly; the periodic quotas.publish_config task will republish")


def _mark_and_queue(client: Any, names: list[str]) -> bool:
    """Mark, and queue the publisher task unless one is queued already; False when the publisher's worker is not
    taking its tasks (one queued ``QUEUE_STALE_S`` ago has not started, and no publisher holds the lock)."""
    prefix = redis_prefix()
    queued_key = config_publish_queued_key(prefix)
    now = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.sadd(config_dirty_key(prefix), *names)
    pipe.set(queued_key, now, nx=True, ex=QUEUED_TTL_S)
    pipe.get(queued_key)
    pipe.exists(config_publisher_lock_key(prefix))
    _, newly_queued, queued_at, publishing = pipe.execute()
    if newly_queued:
        _queue_publisher(client, queued_key)
        return True
    if publishing or now - float(queued_at or now) < QUEUE_STALE_S:
        return True  # a publisher is running, or the queued task is fresh: it takes this mark
    log.warning(
        "the snapshot publisher's worker took no task for %.0f s; publishing in this process", now - float(queued_at)
    )
    return False


def _queue_publisher(client: Any, queued_key: str) -> None:
    from controlplane.snapshot.tasks import publish_dirty_task

    try:
        publish_dirty_task.apply_async(queue=settings.FRONTDOOR_SNAPSHOT_QUEUE, expires=QUEUED_TTL_S)
    except BaseException:
        client.delete(queued_key)  # not queued after all: the next commit queues one
        raise


class _Marks:
    """The sections one transaction changed: marked once, after it commits (Django drops it on rollback)."""

    def __init__(self) -> None:
        self.sections: set[str] = set()

    def __call__(self) -> None:
        mark_now(self.sections)


def request_publish(using: str | None = None, *, tenant_id: int | None = None) -> None:
    """Mark the section of ``tenant_id`` (None: every section) dirty once the current transaction commits (at once
    when not in a transaction).

    One mark per transaction, however many rows and tenants it touched: the callback is registered once and
    collects the sections. A rolled back savepoint drops the callback it registered (then a later change registers
    another); one registered before it keeps the sections added inside, which costs a rebuild, never a miss.
    """
    if not getattr(settings, "FRONTDOOR_PUBLISH_ON_COMMIT", True):
        return
    section = tenant_section(tenant_id) if tenant_id is not None else ALL_SECTIONS
    conn = transaction.get_connection(using)
    if conn.in_atomic_block:
        for entry in conn.run_on_commit:
            if isinstance(entry[1], _Marks):
                entry[1].sections.add(section)
                return
    marks = _Marks()
    marks.sections.add(section)
    transaction.on_commit(marks, using=using)


def _changed_snapshot_fields(sender: type[models.Model], update_fields: Iterable[str] | None) -> bool:
    return update_fields is None or not SNAPSHOT_FIELDS[sender].isdisjoint(update_fields)


def _tenant_of(sender: type[models.Model], instance: Any) -> int | None:
    """The tenant of the changed row; None (every section) when the signal names no row."""
    return _TENANT_OF[sender](instance) if instance is not None else None


def _on_save(
    sender: type[models.Model],
    instance: Any = None,
    raw: bool = False,
    update_fields: Any = None,
    using: str | None = None,
    tenant_ids: Iterable[int] | None = None,
    **_: Any,
) -> None:
    if raw:  # fixture loading
        return
    if not _changed_snapshot_fields(sender, update_fields):
        return
    if tenant_ids is not None:  # a bulk change that names its tenants
        for tenant_id in tenant_ids:
            request_publish(using, tenant_id=tenant_id)
        return
    request_publish(using, tenant_id=_tenant_of(sender, instance))


def _on_delete(sender: type[models.Model], instance: Any = None, using: str | None = None, **_: Any) -> None:
    request_publish(using, tenant_id=_tenant_of(sender, instance))


def connect_signals() -> None:
    """Called from ``SnapshotConfig.ready()``."""
    for model in SNAPSHOT_FIELDS:
        post_save.connect(_on_save, sender=model, dispatch_uid=f"frontdoor-publish-save-{model._meta.label}")
        post_delete.connect(_on_delete, sender=model, dispatch_uid=f"frontdoor-publish-delete-{model._meta.label}")
        bulk_change.connect(_on_save, sender=model, dispatch_uid=f"frontdoor-publish-bulk-{model._meta.label}")
