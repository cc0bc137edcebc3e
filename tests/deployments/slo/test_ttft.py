"""Time to first token in SLO samples: the gateway's ``ttft_le_*`` buckets become a TTFT p95 next to the mean.

The load figures are written by the gateway's own ``LoadFigures`` (the class every gateway process flushes once a
second), so the collector reads exactly what the gateway writes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
import redis
import redis.asyncio as aioredis

from controlplane.redis import get_redis
from deployments.models import ModelDeployment, SloSample
from deployments.slo import collect as slo
from gateway.load import LoadFigures
from tenants.models import Tenant
from tests.support.scaling import write_load


def _flush_like_the_gateway(
    redis_url: str, prefix: str, requests: list[tuple[int, int, float, float | None]]
) -> tuple[int, int]:
    """Record ``(deployment, revision, latency ms, ttft ms)`` requests in a LoadFigures and flush it once.

    Returns the first and last epoch second the figures can be stamped with (LoadFigures reads the clock).
    """
    figures = LoadFigures(prefix)
    first = int(time.time())
    for index, (dep, rev, latency_ms, ttft_ms) in enumerate(requests):
        figures.finished(f"req-{index}", dep, rev, latency_ms, ttft_ms, error=False)

    async def flush() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            await figures.flush(client)
        finally:
            await client.aclose()  # type: ignore[attr-defined]  # redis-py 5 has aclose; the stubs lag

    last = int(time.time())
    asyncio.run(flush())
    return first, last


def _collect_after(seconds: tuple[int, int]) -> None:
    """Collect as the 10 s tick would once the intervals holding ``seconds`` are complete and settled."""
    first, last = (s // slo.INTERVAL_S * slo.INTERVAL_S for s in seconds)
    get_redis().set(slo._cursor_key(), first)
    slo.collect(now=last + slo.INTERVAL_S + slo.SETTLE_S + 0.5)


@pytest.mark.django_db
def test_it_computes_the_ttft_p95_from_the_gateways_buckets(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment], redis_url: str, redis_prefix: str,
) -> None:
    deployment = make_deployment(acme)
    revision = deployment.revisions.get()
    # 18 streams with a fast first token, 2 slow ones: the p95 falls among the slow ones, the mean does not show it.
    ttfts = [12.0] * 18 + [700.0, 800.0]
    seconds = _flush_like_the_gateway(
        redis_url, redis_prefix, [(deployment.pk, revision.pk, ttft + 50.0, ttft) for ttft in ttfts]
    )
    _collect_after(seconds)
    rows = SloSample.unscoped_objects.filter(deployment=deployment, ttft_count__gt=0)
    assert {row.revision_id for row in rows} == {revision.pk, None}
    for row in rows:
        assert row.ttft_count == 20
        assert row.ttft_avg_ms == pytest.approx(sum(ttfts) / 20, abs=1)
        assert row.buckets["ttft_le_25"] == 18 and row.buckets["ttft_le_inf"] == 20
        assert row.ttft_p95_ms is not None and 500 < row.ttft_p95_ms <= 1000  # the bucket holding the slow ones
        assert row.ttft_avg_ms is not None and row.ttft_avg_ms < 500


@pytest.mark.django_db
def test_requests_without_a_first_token_leave_the_ttft_p95_empty(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment], redis_url: str, redis_prefix: str,
) -> None:
    deployment = make_deployment(acme)
    revision = deployment.revisions.get()
    seconds = _flush_like_the_gateway(redis_url, redis_prefix, [(deployment.pk, revision.pk, 40.0, None)] * 5)
    _collect_after(seconds)
    row = SloSample.unscoped_objects.get(deployment=deployment, revision__isnull=True, requests__gt=0)
    assert row.requests == 5
    assert (row.ttft_count, row.ttft_avg_ms, row.ttft_p95_ms) == (0, None, None)
    assert not any(name.startswith("ttft_") for name in row.buckets)


@pytest.mark.django_db
def test_the_five_minute_rows_merge_ttft_histograms(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment], rds: redis.Redis,
) -> None:
    deployment = make_deployment(acme)
    revision = deployment.revisions.get()
    now = 1_800_000_000.0
    span = int(now) // 300 * 300 - 600
    for interval in range(span, span + 300, 10):  # 30 intervals, one fast stream each
        write_load(rds, deployment.pk, revision.pk, interval, [30.0], ttft_ms=[8.0])
    for offset in range(3):  # and three slow first tokens in one interval
        write_load(rds, deployment.pk, revision.pk, span + 150 + offset, [3000.0], ttft_ms=[2000.0])
    rds.set(slo._cursor_key(), span)
    slo.collect(now=now)
    slo.downsample(now=now)
    five = SloSample.unscoped_objects.get(
        deployment=deployment, revision__isnull=True, resolution=SloSample.Resolution.FIVE_MINUTES
    )
    assert five.ttft_count == 33
    # 3 of 33 (9 %) are slow: the p95 lies in their bucket (1000, 2500], though no single 10 s row but one saw them.
    assert five.ttft_p95_ms is not None and 1000 < five.ttft_p95_ms <= 2500
    ten = SloSample.unscoped_objects.filter(deployment=deployment, revision__isnull=True, resolution="10s")
    assert sum(1 for row in ten if row.ttft_p95_ms is not None and row.ttft_p95_ms > 1000) == 1
