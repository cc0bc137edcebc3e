"""Retention of the usage pipeline: forget old request ids, trim the stream, drop long-gone consumers.

Nothing still needed for exactly-once rollups is removed: a request id is kept while its stream entry could be
redelivered, and the stream is trimmed only below what every consumer group has acknowledged (docs/usage.md).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from django.db import connection

from controlplane.redis import get_redis
from quotas.models import UsageEventSeen
from quotas.rollup import GROUP, RollupConfig, ensure_group, entry_ms, stream_key

log = logging.getLogger("frontdoor.quotas.retention")


@dataclass(slots=True)
class PruneStats:
    seen_deleted: int = 0
    stream_trimmed: int = 0
    consumers_removed: int = 0


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _oldest_unacked_id(client: redis.Redis, stream: str) -> str | None:
    """The oldest entry some group has not acknowledged (pending or never delivered), or None if all are."""
    oldest: tuple[int, int] | None = None
    for group in client.xinfo_groups(stream):
        candidates = []
        pending: Any = client.xpending(stream, group["name"])
        if pending and pending.get("pending"):
            candidates.append(_id_tuple(pending["min"]))
        # Everything after last-delivered-id is unread: the first unread entry is its successor.
        ms, seq = _id_tuple(group["last-delivered-id"])
        candidates.append((ms, seq + 1))
        group_oldest = min(candidates)
        oldest = group_oldest if oldest is None else min(oldest, group_oldest)
    return None if oldest is None else f"{oldest[0]}-{oldest[1]}"


def prune_usage(config: RollupConfig | None = None, now: float | None = None) -> PruneStats:
    """Forget old request ids, trim acknowledged old stream entries, drop long-gone idle consumers."""
    config = config or RollupConfig.from_settings()
    now = time.time() if now is None else now
    client, stream = get_redis(), stream_key()
    stats = PruneStats()
    oldest_unacked: str | None = None
    if client.exists(stream):
        ensure_group(client, stream)
        oldest_unacked = _oldest_unacked_id(client, stream)

    # Request ids: keep at least seen_retention_s, and never forget an id whose entry may still be redelivered.
    seen_cutoff = now - config.seen_retention_s
    if oldest_unacked is not None:
        seen_cutoff = min(seen_cutoff, entry_ms(oldest_unacked) / 1000 - 3600)
    stats.seen_deleted = _delete_seen_before(datetime.fromtimestamp(seen_cutoff, tz=UTC))

    if oldest_unacked is not None:
        cutoff = (int((now - config.stream_retention_s) * 1000), 0)
        minid = min(cutoff, _id_tuple(oldest_unacked))
        stats.stream_trimmed = int(client.xtrim(stream, minid=f"{minid[0]}-{minid[1]}", approximate=False))
        stats.consumers_removed = _drop_idle_consumers(client, stream, idle_ms=int(config.seen_retention_s * 1000))
    log.info(
        "usage prune: %d request ids forgotten, %d stream entries trimmed, %d consumers removed",
        stats.seen_deleted,
        stats.stream_trimmed,
        stats.consumers_removed,
    )
    return stats


def _delete_seen_before(cutoff: datetime, chunk: int = 10_000) -> int:
    table = UsageEventSeen._meta.db_table
    deleted = 0
    while True:
        with connection.cursor() as cursor:  # chunks, so no single statement holds locks for long
            cursor.execute(
                f"DELETE FROM {table} WHERE request_id IN "  # noqa: S608 (table name from the model)
                f"(SELECT request_id FROM {table} WHERE seen_at < %s LIMIT %s)",
                [cutoff, chunk],
            )
            deleted += cursor.rowcount
            if cursor.rowcount < chunk:
                return deleted


def _drop_idle_consumers(client: redis.Redis, stream: str, idle_ms: int) -> int:
    """Forget consumers (one per past worker process) with nothing pending and idle for a long time."""
    removed = 0
    for consumer in client.xinfo_consumers(stream, GROUP):
        if consumer["pending"] == 0 and consumer["idle"] > idle_ms:
            client.xgroup_delconsumer(stream, GROUP, consumer["name"])
            removed += 1
    return removed
