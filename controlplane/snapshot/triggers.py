"""Republish the gateway's config snapshot after every commit that changes what the gateway needs.

One publish per transaction, however many rows it touched, run synchronously by the committing process
right after COMMIT (so a revocation reaches the gateway within 2 s without waiting for a worker). A failed
publish is logged, not raised: the change is committed, and the periodic ``quotas.publish_config`` task
republishes within a minute.

Signals do not see ``QuerySet.update()``; code that changes these models with ``update()`` sends
``controlplane.signals.bulk_change`` (as ``ApiKey.revoke`` does, since a model may not import this module) or, above
the models, calls ``request_publish()`` itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import DatabaseError, models, transaction
from django.db.models.signals import post_delete, post_save
from redis.exceptions import RedisError

from controlplane.signals import bulk_change
from controlplane.snapshot.publisher import PROJECTED_FIELDS

log = logging.getLogger("frontdoor.quotas.publish")


def _names_and_attnames(model: type[models.Model], names: tuple[str, ...]) -> frozenset[str]:
    """Each field's name and attname (``tenant`` and ``tenant_id``): ``update_fields`` may give either."""
    attnames = (getattr(model._meta.get_field(name), "attname", name) for name in names)
    return frozenset((*names, *attnames))


# The fields the snapshot projects, per model (the publisher's own list). A save(update_fields=...) touching none of
# them publishes nothing (the reconciler's status writes, last_used_at, names).
SNAPSHOT_FIELDS: dict[type[models.Model], frozenset[str]] = {
    model: _names_and_attnames(model, names) for model, names in PROJECTED_FIELDS.items()
}


def publish_now() -> None:
    """Publish the snapshot; log (never raise) a failure."""
    from controlplane.snapshot.publisher import publish_config

    try:
        publish_config()
    except (RedisError, OSError, DatabaseError):
        log.exception("config publish failed; the periodic quotas.publish_config task will republish")
    except Exception:
        # The change is already committed: failing the caller now would report a failure that did not happen.
        log.exception("config publish failed unexpectedly; the periodic quotas.publish_config task will republish")


def _publish_after_commit() -> None:
    publish_now()


def request_publish(using: str | None = None) -> None:
    """Publish once after the current transaction commits (at once when not in a transaction).

    Idempotent within a transaction: the callback is registered once, and Django drops it on rollback
    (including the rollback of the savepoint it was registered in), so a rolled back change publishes nothing.
    """
    if not getattr(settings, "FRONTDOOR_PUBLISH_ON_COMMIT", True):
        return
    conn = transaction.get_connection(using)
    if conn.in_atomic_block and any(entry[1] is _publish_after_commit for entry in conn.run_on_commit):
        return
    transaction.on_commit(_publish_after_commit, using=using)


def _changed_snapshot_fields(sender: type[models.Model], update_fields: Iterable[str] | None) -> bool:
    return update_fields is None or not SNAPSHOT_FIELDS[sender].isdisjoint(update_fields)


def _on_save(
    sender: type[models.Model], raw: bool = False, update_fields: Any = None, using: str | None = None, **_: Any
) -> None:
    if raw:  # fixture loading
        return
    if _changed_snapshot_fields(sender, update_fields):
        request_publish(using)


def _on_delete(sender: type[models.Model], using: str | None = None, **_: Any) -> None:
    request_publish(using)


def connect_signals() -> None:
    """Called from ``SnapshotConfig.ready()``."""
    for model in SNAPSHOT_FIELDS:
        post_save.connect(_on_save, sender=model, dispatch_uid=f"frontdoor-publish-save-{model._meta.label}")
        post_delete.connect(_on_delete, sender=model, dispatch_uid=f"frontdoor-publish-delete-{model._meta.label}")
        bulk_change.connect(_on_save, sender=model, dispatch_uid=f"frontdoor-publish-bulk-{model._meta.label}")
