"""SLO samples from the gateway's load figures: per revision and per deployment, idempotent, downsampled, pruned."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import redis

from controlplane.contracts.redis_names import deployment_concurrency_key
from deployments.models import ModelDeployment, SloSample
from deployments.slo import collect as slo
from tenants.models import Tenant
from tests.support.scaling import add_leases, write_load

NOW = 1_800_000_000.0  # a fixed clock, aligned to 10 s


def _collect_interval(deployment: ModelDeployment, rds: redis.Redis) -> list[SloSample]:
    revision = deployment.revisions.get()
    interval = int(NOW) - 20  # complete and settled at NOW
    for offset in range(10):
        write_load(rds, deployment.pk, revision.pk, interval + offset, [8.0, 40.0, 90.0, 400.0], errors=1 if offset < 2
                   else 0, ttft_ms=[20.0])
    slo.collect(now=NOW)
    return list(SloSample.unscoped_objects.filter(deployment=deployment).order_by("revision_id"))


@pytest.mark.django_db
def test_it_turns_load_figures_into_revision_and_deployment_samples(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment], rds: redis.Redis
) -> None:
    deployment = make_deployment(acme)
    revision = deployment.revisions.get()
    rows = _collect_interval(deployment, rds)
    by_revision = {row.revision_id: row for row in rows if row.interval_start == datetime.fromtimestamp(NOW - 20, UTC)}
    assert set(by_revision) == {revision.pk, None}
    for row in by_revision.values():
        assert (row.requests, row.errors) == (40, 2)
        assert row.latency_ms_sum == 10 * (8 + 40 + 90 + 400)
        assert row.ttft_avg_ms == 20.0
        assert row.buckets["le_inf"] == 40 and row.buckets["le_10"] == 10
        assert row.p50_ms is not None and 25 <= row.p50_ms <= 100
        assert row.p95_ms is not None and 250 <= row.p95_ms <= 500
        assert row.p99_ms is not None and row.p99_ms >= row.p95_ms


@pytest.mark.django_db
def test_it_upserts_when_an_interval_is_collected_again(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment], rds: redis.Redis
) -> None:
    deployment = make_deployment(acme)
    first = {(r.revision_id, r.interval_start): (r.requests, r.p95_ms) for r in _collect_interval(deployment, rds)}
    rds.delete(slo._cursor_key())  # forget where it stopped: the same intervals are read again
    slo.collect(now=NOW)
    again = {(r.revision_id, r.interval_start): (r.requests, r.p95_ms)
             for r in SloSample.unscoped_objects.filter(deployment=deployment)}
    assert again == first


@pytest.mark.django_db
def test_it_records_in_flight_and_replicas_on_the_newest_interval(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment], rds: redis.Redis, redis_prefix: str
) -> None:
    deployment = make_deployment(acme, min_replicas=1)
    ModelDeployment.unscoped_objects.filter(pk=deployment.pk).update(ready_replicas=1, desired_replicas=2)
    add_leases(rds, deployment.pk, 3, int((NOW + 30) * 1000))
    rds.zadd(deployment_concurrency_key(redis_prefix, deployment.pk), {"expired-lease": int((NOW - 5) * 1000)})
    slo.collect(now=NOW)
    row = SloSample.unscoped_objects.get(deployment=deployment, revision__isnull=True)
    assert (row.in_flight, row.replicas_ready, row.replicas_desired) == (3, 1, 2)
    assert row.requests == 0


@pytest.mark.django_db
def test_it_downsamples_ten_second_rows_into_five_minute_rows(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment], rds: redis.Redis
) -> None:
    deployment = make_deployment(acme)
    revision = deployment.revisions.get()
    span = int(NOW) // 300 * 300 - 600  # a complete 5 min span, still within the collector's catch-up reach
    for interval in range(span, span + 300, 10):
        write_load(rds, deployment.pk, revision.pk, interval, [30.0, 30.0], errors=0)
    write_load(rds, deployment.pk, revision.pk, span + 150, [3000.0], errors=1)
    rds.set(slo._cursor_key(), span)
    slo.collect(now=NOW)
    slo.downsample(now=NOW)
    five = SloSample.unscoped_objects.get(
        deployment=deployment, revision__isnull=True, resolution=SloSample.Resolution.FIVE_MINUTES
    )
    assert five.interval_start == datetime.fromtimestamp(span, UTC)
    assert (five.requests, five.errors) == (61, 1)
    assert five.p50_ms is not None and five.p50_ms <= 50
    ten = SloSample.unscoped_objects.filter(deployment=deployment, revision__isnull=True, resolution="10s")
    assert sum(row.requests for row in ten) == five.requests


@pytest.mark.django_db
def test_it_prunes_rows_past_their_retention(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment]
) -> None:
    deployment = make_deployment(acme)
    now = datetime.now(tz=UTC)

    def row(resolution: str, age: timedelta) -> None:
        SloSample.unscoped_objects.create(
            tenant=acme, deployment=deployment, resolution=resolution, interval_start=now - age, requests=1
        )
    row("10s", timedelta(hours=2))
    row("10s", timedelta(days=2))
    row("5m", timedelta(days=2))
    row("5m", timedelta(days=31))
    assert slo.prune(now) == 2
    kept = sorted((r.resolution, round((now - r.interval_start) / timedelta(hours=1)))
                  for r in SloSample.unscoped_objects.all())
    assert kept == [("10s", 2), ("5m", 48)]


def test_it_computes_percentiles_from_cumulative_buckets() -> None:
    buckets = {"le_10": 50, "le_25": 50, "le_50": 90, "le_100": 100, "le_inf": 100}
    assert slo.percentile_from_buckets(buckets, 0.5) == pytest.approx(10.0)
    assert slo.percentile_from_buckets(buckets, 0.7) == pytest.approx(25 + 25 * (70 - 50) / 40)
    assert slo.percentile_from_buckets(buckets, 0.99) == pytest.approx(50 + 50 * 9 / 10)
    assert slo.percentile_from_buckets({}, 0.5) is None
    assert slo.fraction_slower_than(buckets, 50) == pytest.approx(0.10)
    assert slo.fraction_slower_than(buckets, 75) == pytest.approx(0.05)
