"""Helpers for the autoscaling, SLO and rollout tests: deployments made through the services, load figures
written exactly as the gateway writes them (docs/contracts.md "Load figures"), and synthetic SLO samples."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
import redis
from django.conf import settings

from deployments import services
from deployments.models import ModelDeployment, Revision, SloSample
from deployments.slo.collect import BUCKET_BOUNDS_MS, BUCKET_NAMES
from tenants.models import Tenant

__all__ = ["add_leases", "add_revision", "make_deployment", "rds", "sample", "write_load"]


@pytest.fixture
def rds(redis_prefix: str, redis_url: str) -> redis.Redis:
    """A client of this run's Redis database; the test's keys use ``redis_prefix``."""
    return redis.Redis.from_url(redis_url, decode_responses=True)


@pytest.fixture
def make_deployment(db: None) -> Callable[..., ModelDeployment]:
    def make(tenant: Tenant, **fields: Any) -> ModelDeployment:
        data: dict[str, Any] = {
            "name": "chat",
            "runtime": "builtin",
            "model": "frontdoor/sim-chat",
            "min_replicas": 0,
            "max_replicas": 4,
            "target_concurrency": 1,
        }
        data.update(fields)
        return services.create_deployment(tenant, None, data)

    return make


def add_revision(deployment: ModelDeployment, *, weight: int = 0) -> Revision:
    """A second revision (a spec change) taking ``weight`` percent."""
    services.update_deployment(deployment, None, {"model": deployment.model + "-v2"}, canary_weight=weight)
    return Revision.unscoped_objects.filter(deployment=deployment).order_by("-number").first()  # type: ignore[return-value]


def write_load(
    client: redis.Redis, deployment_id: int, revision_id: int, second: int, latencies_ms: list[float], errors: int = 0,
    ttft_ms: list[float] | None = None,
) -> None:
    """Add one second of figures, as one gateway flush would (HINCRBY, cumulative ``le_`` and ``ttft_le_`` buckets)."""
    key = f"{settings.FRONTDOOR_REDIS_PREFIX}:load:{deployment_id}:{revision_id}:{second}"
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
    key = f"{settings.FRONTDOOR_REDIS_PREFIX}:conc:deployment:{deployment_id}"
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
