"""Per-second load figures for the autoscaler and SLO collector (docs/contracts.md "Load figures").

Requests add to an in-memory table (counts, sums, cumulative latency buckets ``le_<ms>`` and, for requests
with a first token, cumulative TTFT buckets ``ttft_le_<ms>``); a background task flushes it with HINCRBY once a
second. The same flush publishes per-revision in-flight leases (``<prefix>:inflight:<deployment>:<revision>``, a
ZSET of request ids scored by expiry) for requests that started since the last flush; the usage pipeline removes
them when done -- only those that were published: ``forget()`` tells which (most requests end within the second
they started in, so their lease never reaches Redis and needs no ZREM).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from bisect import bisect_left

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from controlplane.contracts.redis_names import load_key, revision_inflight_key

log = logging.getLogger("frontdoor.gateway.load")

BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
BUCKET_FIELDS = (*(f"le_{b}" for b in BUCKETS_MS), "le_inf")
# Time to first token, same bounds (the SLO collector's TTFT p95 comes from these).
TTFT_BUCKET_FIELDS = tuple(f"ttft_{name}" for name in BUCKET_FIELDS)
EXPIRY_S = 15 * 60


class LoadFigures:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        # (deployment id, revision id, epoch second) -> {field: amount}
        self._table: dict[tuple[int, int, int], dict[str, int]] = {}
        # request id -> (deployment id, revision id, lease expiry); started and not yet published
        self._new_leases: dict[str, tuple[int, int, float]] = {}

    def started(self, request_id: str, deployment_id: int, revision_id: int, lease_ttl_s: float) -> None:
        self._new_leases[request_id] = (deployment_id, revision_id, time.time() + lease_ttl_s)

    def forget(self, request_id: str) -> bool:
        """Drop a finished request's unpublished lease; ``True`` when it was already published (ZREM it)."""
        return self._new_leases.pop(request_id, None) is None

    def finished(
        self,
        request_id: str,
        deployment_id: int,
        revision_id: int,
        latency_ms: float,
        ttft_ms: float | None,
        error: bool,
    ) -> None:
        self._new_leases.pop(request_id, None)  # never published: nothing to remove
        key = (deployment_id, revision_id, int(time.time()))
        row = self._table.get(key)
        if row is None:
            row = self._table[key] = {}
        row["requests"] = row.get("requests", 0) + 1
        if error:
            row["errors"] = row.get("errors", 0) + 1
        row["latency_ms_sum"] = row.get("latency_ms_sum", 0) + round(latency_ms)
        if ttft_ms is not None:
            row["ttft_ms_sum"] = row.get("ttft_ms_sum", 0) + round(ttft_ms)
            row["ttft_count"] = row.get("ttft_count", 0) + 1
            for name in TTFT_BUCKET_FIELDS[bisect_left(BUCKETS_MS, math.ceil(ttft_ms)) :]:
                row[name] = row.get(name, 0) + 1
        # Cumulative buckets: every bound at or above the latency counts it.
        for name in BUCKET_FIELDS[bisect_left(BUCKETS_MS, math.ceil(latency_ms)) :]:
            row[name] = row.get(name, 0) + 1

    async def flush(self, redis: aioredis.Redis) -> None:
        table, self._table = self._table, {}
        leases, self._new_leases = self._new_leases, {}
        if not table and not leases:
            return
        pipe = redis.pipeline(transaction=False)
        for (dep, rev, second), row in table.items():
            key = load_key(self.prefix, dep, rev, second)
            for name, amount in row.items():
                pipe.hincrby(key, name, amount)
            pipe.expire(key, EXPIRY_S)
        touched: set[str] = set()
        for rid, (dep, rev, expiry) in leases.items():
            key = revision_inflight_key(self.prefix, dep, rev)
            pipe.zadd(key, {rid: expiry})
            touched.add(key)
        now = time.time()
        for key in touched:  # leases of a crashed gateway expire; drop them so the ZSET stays small
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.expire(key, EXPIRY_S)
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("load figures lost for one second: %s", exc)

    async def flush_forever(self, redis: aioredis.Redis, interval_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self.flush(redis)
