"""Roll the gateway's usage stream (``<prefix>:usage``) up into per-minute ``UsageRollup`` rows, exactly once.

The events' fields are ``controlplane.contracts.usage_events``'s.

Consumer group ``rollup``; one consumer per worker process. Each batch is one Postgres transaction:

1. insert the batch's request ids into ``UsageEventSeen`` (``ON CONFLICT DO NOTHING RETURNING``): only the
   ids that come back are new; the others were already counted by an earlier, committed delivery;
2. add the new events into their (minute, tenant, key, deployment, batch) buckets with one upsert;
3. move ``ApiKey.last_used_at`` forward;

then COMMIT, then XACK. A crash before COMMIT rolls everything back and the entries stay pending (they
are re-read by this consumer, or claimed by another after ``claim_idle_ms``); a crash between COMMIT and
XACK redelivers entries whose ids are already in ``UsageEventSeen``, so they count zero. docs/usage.md
has the whole argument and the retention rules.

Errors are status 429 and status >= 500: what the platform refused or failed. Other 4xx (the client's own
mistakes) and 499 (the client went away; its relayed tokens still count) are not errors.

A Batch API line carries its batch's id (``batch``); its usage goes to buckets of its own (``batch = true``), beside
the interactive ones. An event without the field (written before it existed) is interactive. A line that is run
again keeps its request id, so a re-run counts zero like any other redelivery.

``inferences`` (Open Inference Protocol requests) and ``images`` (image generation) are summed like the tokens. Events
written before the fields existed lack them: 0. A bad value (not a number, negative, beyond ``_MAX_COUNT``) also counts
0 without skipping the event: the request itself still happened and still counts.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import redis
from django.conf import settings
from django.db import connection, transaction

from controlplane.contracts import usage_events
from controlplane.contracts.redis_names import usage_stream_key
from controlplane.redis import get_redis, redis_prefix
from deployments.models import ModelDeployment
from quotas.models import UsageEventSeen, UsageRollup
from tenants.models import ApiKey, Tenant

log = logging.getLogger("frontdoor.quotas.rollup")

GROUP = "rollup"
MAX_RID_LENGTH = 64  # UsageEventSeen.request_id

StreamEntry = tuple[str, dict[str, str] | None]


@dataclass(frozen=True)
class RollupConfig:
    """Tunables; ``from_settings()`` reads ``FRONTDOOR_USAGE_*`` settings when they exist."""

    batch_size: int = 500
    claim_idle_ms: int = 30_000  # a pending entry idle this long belongs to a dead (or stuck) consumer
    max_seconds: float = 1.5  # one run's time budget; beat starts a run every 2 s
    stream_retention_s: float = 3600.0  # acknowledged stream entries older than this are trimmed
    seen_retention_s: float = 7 * 86400.0  # request ids remembered for deduplication

    @classmethod
    def from_settings(cls, **overrides: Any) -> RollupConfig:
        values: dict[str, Any] = {
            "batch_size": getattr(settings, "FRONTDOOR_USAGE_BATCH_SIZE", cls.batch_size),
            "claim_idle_ms": getattr(settings, "FRONTDOOR_USAGE_CLAIM_IDLE_MS", cls.claim_idle_ms),
            "max_seconds": getattr(settings, "FRONTDOOR_USAGE_MAX_SECONDS", cls.max_seconds),
            "stream_retention_s": getattr(settings, "FRONTDOOR_USAGE_STREAM_RETENTION_S", cls.stream_retention_s),
            "seen_retention_s": getattr(settings, "FRONTDOOR_USAGE_SEEN_RETENTION_S", cls.seen_retention_s),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One parsed stream entry (docs/contracts.md "Usage events")."""

    entry_id: str
    rid: str
    ts: float
    tenant_id: int
    key_id: int | None
    deployment_id: int | None
    status: int
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    batch: bool = False  # a Batch API line (the event names its batch), not an interactive request
    inferences: int = 0
    images: int = 0

    @property
    def minute(self) -> datetime:
        return datetime.fromtimestamp(math.floor(self.ts / 60) * 60, tz=UTC)

    @property
    def is_error(self) -> bool:
        return self.status == 429 or self.status >= 500


@dataclass(slots=True)
class RollupStats:
    """What one run did: entries read, events counted, duplicates and invalid entries skipped."""

    read: int = 0
    counted: int = 0
    duplicates: int = 0
    skipped: int = 0
    batches: int = 0

    def add(self, other: RollupStats) -> None:
        self.read += other.read
        self.counted += other.counted
        self.duplicates += other.duplicates
        self.skipped += other.skipped
        self.batches += other.batches


def stream_key() -> str:
    return usage_stream_key(redis_prefix())


def consumer_name() -> str:
    """Unique per worker process: a restarted worker is a new consumer, and claims its predecessor's entries."""
    return f"{socket.gethostname()}:{os.getpid()}"


def entry_ms(entry_id: str) -> int:
    """The epoch milliseconds a stream entry id starts with (when Redis stored the event)."""
    return int(entry_id.split("-", 1)[0])


_MAX_ID = 2**63 - 1
_MAX_COUNT = 2**31 - 1


def _int(value: str | None, default: int | None = None, low: int = 0, high: int = _MAX_ID) -> int | None:
    """An integer field in range, or ValueError (a value Postgres would refuse must not wedge the stream)."""
    if value is None or value == "":
        return default
    number = int(value) if value.lstrip("-").isdigit() else int(float(value))
    if not low <= number <= high:
        raise ValueError(f"{value!r} out of range")
    return number


def _count_or_zero(value: str | None) -> int:
    """A count in range, or 0 when it is absent or bad: these counts never decide whether the request counts."""
    try:
        return _int(value, 0, high=_MAX_COUNT) or 0
    except (TypeError, ValueError, OverflowError):
        return 0


def _request_id(rid: str | None, entry_id: str) -> str:
    if not rid:
        return f"xid:{entry_id}"  # no id: the stream entry itself is the unit of deduplication
    if len(rid) > MAX_RID_LENGTH:
        return f"sha:{hashlib.sha256(rid.encode()).hexdigest()[: MAX_RID_LENGTH - 4]}"
    return rid


def parse_event(entry_id: str, fields: dict[str, str] | None) -> UsageEvent | None:
    """The event, or None for an entry that cannot be counted (trimmed, or malformed: logged and skipped)."""
    if not fields:
        return None
    try:
        ts = float(fields.get(usage_events.TS) or "nan")
        if not math.isfinite(ts):
            ts = entry_ms(entry_id) / 1000
        tenant_id = _int(fields.get(usage_events.TENANT))
        if tenant_id is None:
            raise ValueError("no tenant")
        return UsageEvent(
            entry_id=entry_id,
            rid=_request_id(fields.get(usage_events.RID), entry_id),
            ts=ts,
            tenant_id=tenant_id,
            key_id=_int(fields.get(usage_events.KEY)),
            deployment_id=_int(fields.get(usage_events.DEPLOYMENT)),
            status=_int(fields.get(usage_events.STATUS), 0, high=999) or 0,
            prompt_tokens=_int(fields.get(usage_events.PROMPT_TOKENS), 0, high=_MAX_COUNT) or 0,
            completion_tokens=_int(fields.get(usage_events.COMPLETION_TOKENS), 0, high=_MAX_COUNT) or 0,
            latency_ms=min(_MAX_COUNT, max(0, round(float(fields.get(usage_events.LATENCY_MS) or 0)))),
            batch=bool((fields.get(usage_events.BATCH) or "").strip()),
            inferences=_count_or_zero(fields.get(usage_events.INFERENCES)),
            images=_count_or_zero(fields.get(usage_events.IMAGES)),
        )
    except (TypeError, ValueError, OverflowError) as exc:
        log.warning("skipping malformed usage entry %s (%s): %r", entry_id, exc, fields)
        return None


class _BucketKey(NamedTuple):
    """A ``UsageRollup`` row's identity: the columns of ``usage_rollup_unique_bucket``."""

    minute: datetime
    tenant_id: int
    key_id: int | None
    deployment_id: int | None
    batch: bool


@dataclass(slots=True)
class _Bucket:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms_sum: int = 0
    inferences: int = 0
    images: int = 0
    last_ts: float = field(default=0.0)


def _existing_ids(cursor: Any, table: str, ids: Iterable[int]) -> set[int]:
    cursor.execute(f"SELECT id FROM {table} WHERE id = ANY(%s)", [sorted(set(ids))])  # noqa: S608 (model table)
    return {row[0] for row in cursor.fetchall()}


def roll_up_events(events: Sequence[UsageEvent]) -> RollupStats:
    """Count the events not counted before, in one transaction (commits before returning)."""
    stats = RollupStats(read=len(events), batches=1)
    unique: dict[str, UsageEvent] = {}
    for event in events:
        unique.setdefault(event.rid, event)  # the same id twice in one batch counts once
    if not unique:
        return stats
    tenant_table, key_table = Tenant._meta.db_table, ApiKey._meta.db_table
    seen_table, rollup_table = UsageEventSeen._meta.db_table, UsageRollup._meta.db_table
    deployment_table = ModelDeployment._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        tenants = _existing_ids(cursor, tenant_table, (e.tenant_id for e in unique.values()))
        valid = [e for e in unique.values() if e.tenant_id in tenants]  # a deleted tenant's usage is dropped
        stats.skipped += len(unique) - len(valid)
        if not valid:
            return stats
        cursor.execute(
            f"INSERT INTO {seen_table} (request_id, seen_at) SELECT unnest(%s::text[]), now() "
            "ON CONFLICT DO NOTHING RETURNING request_id",
            [sorted(e.rid for e in valid)],
        )
        inserted = {row[0] for row in cursor.fetchall()}
        fresh = [e for e in valid if e.rid in inserted]
        stats.duplicates += len(valid) - len(fresh)
        stats.counted = len(fresh)
        if not fresh:
            return stats

        cursor.execute(
            f"SELECT id, tenant_id FROM {key_table} WHERE id = ANY(%s)",  # noqa: S608
            [sorted({e.key_id for e in fresh if e.key_id is not None})],
        )
        key_tenant = dict(cursor.fetchall())
        cursor.execute(
            f"SELECT id, name FROM {deployment_table} WHERE id = ANY(%s)",  # noqa: S608
            [sorted({e.deployment_id for e in fresh if e.deployment_id is not None})],
        )
        deployment_names: dict[int, str] = dict(cursor.fetchall())

        buckets: dict[_BucketKey, _Bucket] = {}
        for e in fresh:
            # A deleted key (or one of another tenant) keeps the tenant's usage, without the key.
            key_id = e.key_id if key_tenant.get(e.key_id) == e.tenant_id else None
            bucket = buckets.setdefault(_BucketKey(e.minute, e.tenant_id, key_id, e.deployment_id, e.batch), _Bucket())
            bucket.requests += 1
            bucket.errors += int(e.is_error)
            bucket.prompt_tokens += e.prompt_tokens
            bucket.completion_tokens += e.completion_tokens
            bucket.latency_ms_sum += e.latency_ms
            bucket.inferences += e.inferences
            bucket.images += e.images
            bucket.last_ts = max(bucket.last_ts, e.ts)
        _upsert_buckets(cursor, rollup_table, buckets, deployment_names)
        _touch_keys(cursor, key_table, buckets)
    return stats


def _sort_key(item: tuple[_BucketKey, _Bucket]) -> tuple[Any, ...]:
    (minute, tenant, key, deployment, batch), _ = item
    return (minute, tenant, key is None, key or 0, deployment is None, deployment or 0, batch)


def _upsert_buckets(
    cursor: Any,
    table: str,
    buckets: dict[_BucketKey, _Bucket],
    deployment_names: dict[int, str],
) -> None:
    # Sorted, so two consumers lock shared rows in the same order (no deadlock).
    rows = sorted(buckets.items(), key=_sort_key)
    columns: list[list[Any]] = [[] for _ in range(13)]
    for (minute, tenant, key, deployment, batch), b in rows:
        name = deployment_names.get(deployment, "") if deployment is not None else ""
        for column, value in zip(
            columns,
            (
                minute,
                tenant,
                key,
                deployment,
                batch,
                name,
                b.requests,
                b.errors,
                b.prompt_tokens,
                b.completion_tokens,
                b.latency_ms_sum,
                b.inferences,
                b.images,
            ),
            strict=True,
        ):
            column.append(value)
    # The unique bucket constraint is NULLS NOT DISTINCT, so a NULL key or deployment still conflicts.
    cursor.execute(
        f"""
        INSERT INTO {table} AS r (minute, tenant_id, api_key_id, deployment_id, batch, deployment_name, requests,
                                  errors, prompt_tokens, completion_tokens, latency_ms_sum, inferences, images)
        SELECT * FROM unnest(%s::timestamptz[], %s::bigint[], %s::bigint[], %s::bigint[], %s::boolean[], %s::text[],
                             %s::integer[], %s::integer[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[],
                             %s::bigint[])
        ON CONFLICT ON CONSTRAINT usage_rollup_unique_bucket DO UPDATE SET
            requests = r.requests + EXCLUDED.requests,
            errors = r.errors + EXCLUDED.errors,
            prompt_tokens = r.prompt_tokens + EXCLUDED.prompt_tokens,
            completion_tokens = r.completion_tokens + EXCLUDED.completion_tokens,
            latency_ms_sum = r.latency_ms_sum + EXCLUDED.latency_ms_sum,
            inferences = r.inferences + EXCLUDED.inferences,
            images = r.images + EXCLUDED.images,
            deployment_name = CASE WHEN EXCLUDED.deployment_name <> '' THEN EXCLUDED.deployment_name
                                   ELSE r.deployment_name END
        """,  # noqa: S608 (table name from the model)
        columns,
    )


def _touch_keys(cursor: Any, table: str, buckets: dict[_BucketKey, _Bucket]) -> None:
    last_used: dict[int, float] = {}
    for bucket_key, bucket in buckets.items():
        if (key := bucket_key.key_id) is not None:
            last_used[key] = max(last_used.get(key, 0.0), bucket.last_ts)
    if not last_used:
        return
    ids = sorted(last_used)
    stamps = [datetime.fromtimestamp(last_used[i], tz=UTC) for i in ids]
    # Lock in id order first (the UPDATE's own lock order follows its plan): concurrent consumers cannot deadlock.
    cursor.execute(
        f"SELECT id FROM {table} WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE",  # noqa: S608 (model table)
        [ids],
    )
    cursor.execute(
        f"""
        UPDATE {table} k SET last_used_at = v.ts
        FROM unnest(%s::bigint[], %s::timestamptz[]) AS v(id, ts)
        WHERE k.id = v.id AND (k.last_used_at IS NULL OR k.last_used_at < v.ts)
        """,  # noqa: S608 (table name from the model)
        [ids, stamps],
    )


def ensure_group(client: redis.Redis, stream: str) -> None:
    """Create the consumer group (and the stream) when missing; reading starts at the stream's beginning."""
    try:
        client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def process_entries(client: redis.Redis, stream: str, entries: Sequence[StreamEntry]) -> RollupStats:
    """Roll up one batch of stream entries, then acknowledge all of them (also the skipped ones)."""
    if not entries:
        return RollupStats()
    events = [e for e in (parse_event(entry_id, fields) for entry_id, fields in entries) if e is not None]
    stats = roll_up_events(events)
    stats.read = len(entries)
    stats.skipped += len(entries) - len(events)
    client.xack(stream, GROUP, *[entry_id for entry_id, _ in entries])
    return stats


def _read(client: redis.Redis, stream: str, consumer: str, start: str, count: int) -> list[StreamEntry]:
    reply: Any = client.xreadgroup(GROUP, consumer, {stream: start}, count=count)
    if not reply:
        return []
    _, entries = reply[0]
    return list(entries)


def run_rollup(config: RollupConfig | None = None, consumer: str | None = None) -> RollupStats:
    """One bounded run: own pending entries, then stale ones of dead consumers, then new ones."""
    config = config or RollupConfig.from_settings()
    consumer = consumer or consumer_name()
    client, stream = get_redis(), stream_key()
    ensure_group(client, stream)
    deadline = time.monotonic() + config.max_seconds
    total = RollupStats()

    # 1. Our own pending entries (a batch that failed before its XACK in this process).
    while time.monotonic() < deadline:
        entries = _read(client, stream, consumer, "0", config.batch_size)
        if not entries:
            break
        total.add(process_entries(client, stream, entries))

    # 2. Entries left pending by consumers that died (or stalled) for longer than claim_idle_ms.
    cursor = "0-0"
    while time.monotonic() < deadline:
        reply: Any = client.xautoclaim(
            stream, GROUP, consumer, config.claim_idle_ms, start_id=cursor, count=config.batch_size
        )
        cursor, claimed = reply[0], reply[1]
        total.add(process_entries(client, stream, claimed))
        if cursor == "0-0":
            break

    # 3. New entries.
    while time.monotonic() < deadline:
        entries = _read(client, stream, consumer, ">", config.batch_size)
        if not entries:
            break
        total.add(process_entries(client, stream, entries))
        if len(entries) < config.batch_size:
            break
    if total.read:
        log.info(
            "usage rollup %s: read %d, counted %d, duplicates %d, skipped %d in %d batches",
            consumer,
            total.read,
            total.counted,
            total.duplicates,
            total.skipped,
            total.batches,
        )
    return total


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m quotas.rollup --once | --loop``: run the consumer without Celery (operations, debugging)."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    django.setup()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--once", action="store_true", help="one bounded run, then exit")
    mode.add_argument("--loop", action="store_true", help="run forever, idling 1 s when the stream is empty")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--claim-idle-ms", type=int)
    args = parser.parse_args(argv)
    config = RollupConfig.from_settings(batch_size=args.batch_size, claim_idle_ms=args.claim_idle_ms)
    while True:
        stats = run_rollup(config)
        if args.once:
            return
        if stats.read == 0:
            time.sleep(1.0)


if __name__ == "__main__":
    main()
