"""Helpers for the autoscaling, SLO and rollout tests: load figures written exactly as the gateway writes them
(docs/contracts.md "Load figures"), concurrency leases as the limiter holds them, and synthetic SLO samples."""

from __future__ import annotations

import math
from datetime import datetime

import redis

from controlplane.contracts.redis_names import deployment_concurrency_key, load_key
from controlplane.redis import redis_prefix
from deployments import services
from deployments.models import ModelDeployment, Revision, SloSample
from deployments.slo.collect import BUCKET_BOUNDS_MS, BUCKET_NAMES


def add_revision(deployment: ModelDeployment, *, weight: int = 0) -> Revision:
    """A second revision (a spec change) taking ``weight`` percent."""
    services.update_deployment(deployment, {"model": deployment.model + "-v2"}, canary_weight=weight, actor=None)
    return Revision.unscoped_objects.filter(deployment=deployment).order_by("-number").first()  # type: ignore[return-value]


def write_load(
    client: redis.Redis, deployment_id: int, revision_id: int, second: int, latencies_ms: list[float], errors: int = 0,
    ttft_ms: list[float] | None = None,
) -> None:
    """Add one second of figures, as one gateway flush would (HINCRBY, cumulative ``le_`` and ``ttft_le_`` buckets)."""
    key = load_key(redis_prefix(), deployment_id, revision_id, second)
    pipe = client.pipeline()
    pipe.hincrby(key, "requests", len(latencies_ms))
    if errors:
        pipe.hincrby(key, "errors", errors)
    pipe.hincrby(key, "latency_ms_sum", round(sum(latencies_ms)))
    for ttft in ttft_ms or []:
        pipe.hincrby(key, "ttft_ms_sum", round(ttft))
        pipe.hincrby(key, "ttft_count", 1)
        for bound, name in zip(BUCKET_BOUNDS_MS, BUCKET_NAMES, strict=True):
            if math.ceil(ttft) <= bound:
                pipe.hincrby(key, f"ttft_{name}", 1)
    for latency in latencies_ms:
        for bound, name in zip(BUCKET_BOUNDS_MS, BUCKET_NAMES, strict=True):
            if math.ceil(latency) <= bound:
                pipe.hincrby(key, name, 1)
    pipe.expire(key, 900)
    pipe.execute()


def add_leases(client: redis.Redis, deployment_id: int, count: int, expires_at_ms: int) -> None:
    key = deployment_concurrency_key(redis_prefix(), deployment_id)
    client.zadd(key, {f"lease-{i}": expires_at_ms for i in range(count)})


def sample(
    deployment: ModelDeployment,
    revision: Revision | None,
    start: datetime,
    *,
    requests: int,
    errors: int = 0,
    latency_ms: float = 40.0,
) -> SloSample:
    """A 10 s SLO sample whose requests all took ``latency_ms``."""
    buckets = {name: (requests if math.ceil(latency_ms) <= bound else 0)
               for bound, name in zip(BUCKET_BOUNDS_MS, BUCKET_NAMES, strict=True)}
    return SloSample.unscoped_objects.create(
        tenant_id=deployment.tenant_id, deployment=deployment, revision=revision, interval_start=start,
        requests=requests, errors=errors, latency_ms_sum=round(latency_ms * requests), buckets=buckets,
        p95_ms=latency_ms if requests else None,
    )
