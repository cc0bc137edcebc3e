"""Inferences and images in the usage stream: summed per bucket, absent or bad values count 0, each event once."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import redis

from controlplane.contracts import usage_events
from controlplane.contracts.redis_names import usage_stream_key
from controlplane.redis import get_redis
from deployments.models import ModelDeployment
from quotas.models import UsageRollup
from quotas.rollup import GROUP, RollupConfig, parse_event, run_rollup
from tenants.models import ApiKey, Tenant
from tests.support.staff import make_deployment

pytestmark = pytest.mark.django_db

CONFIG = RollupConfig(batch_size=50, claim_idle_ms=30_000, max_seconds=30.0)
MAX_COUNT = 2**31 - 1  # the most one event may carry (as for tokens)


@pytest.fixture
def r(redis_prefix: str) -> redis.Redis:
    return get_redis()


@pytest.fixture
def stream(redis_prefix: str) -> str:
    return usage_stream_key(redis_prefix)


@pytest.fixture
def key(acme: Tenant) -> ApiKey:
    return ApiKey.issue(tenant=acme, name="k1", scopes=["inference"])[0]


@pytest.fixture
def ranker(acme: Tenant) -> ModelDeployment:
    return make_deployment(acme, "ranker")


def usage_event(
    tenant: Tenant, key: ApiKey, deployment: ModelDeployment, ts: float, **fields: Any
) -> dict[str, usage_events.Value]:
    """One usage event exactly as the gateway writes it."""
    return usage_events.as_mapping(
        usage_events.encode_event(
            request_id=fields.get("rid", uuid.uuid4().hex),
            ts=ts,
            tenant_id=tenant.pk,
            key_id=key.pk,
            deployment_id=deployment.pk,
            revision_id=None,
            status=200,
            prompt_tokens=fields.get("prompt_tokens", 0),
            completion_tokens=0,
            latency_ms=8.0,
            ttft_ms=None,
            batch_id=fields.get("batch_id", ""),
            inferences=fields.get("inferences", 0),
            images=fields.get("images", 0),
        )
    )


def older_event(tenant: Tenant, key: ApiKey, deployment: ModelDeployment, ts: float) -> dict[str, usage_events.Value]:
    """An event written before the gateway counted inferences and images: neither field is there."""
    fields = usage_event(tenant, key, deployment, ts, prompt_tokens=10)
    del fields[usage_events.INFERENCES], fields[usage_events.IMAGES]
    return fields


def feed(r: redis.Redis, stream: str, events: list[dict[str, usage_events.Value]]) -> None:
    for fields in events:
        r.xadd(stream, fields)  # type: ignore[arg-type]


def this_minute() -> float:
    """A time one second into the current minute, so every event of a test falls in one bucket."""
    return (time.time() // 60) * 60 + 1


def units_by_bucket() -> dict[tuple[int | None, bool], tuple[int, int, int]]:
    """(deployment, batch) -> (requests, inferences, images), over every row."""
    return {
        (row.deployment_id, row.batch): (row.requests, row.inferences, row.images)
        for row in UsageRollup.unscoped_objects.all()
    }


def test_it_sums_inferences_and_images_per_bucket(
    r: redis.Redis, stream: str, acme: Tenant, key: ApiKey, ranker: ModelDeployment
) -> None:
    painter = make_deployment(acme, "painter")
    ts = this_minute()
    feed(r, stream, [usage_event(acme, key, ranker, ts + n, inferences=8 * (n + 1)) for n in range(3)])
    feed(r, stream, [usage_event(acme, key, painter, ts + n, images=n + 1) for n in range(2)])

    stats = run_rollup(CONFIG, consumer="c1")

    assert (stats.counted, stats.skipped) == (5, 0)
    assert units_by_bucket() == {(ranker.pk, False): (3, 48, 0), (painter.pk, False): (2, 0, 3)}


def test_it_adds_a_later_run_to_the_same_bucket(
    r: redis.Redis, stream: str, acme: Tenant, key: ApiKey, ranker: ModelDeployment
) -> None:
    ts = this_minute()
    feed(r, stream, [usage_event(acme, key, ranker, ts, inferences=5, images=1)])
    run_rollup(CONFIG, consumer="c1")
    feed(r, stream, [usage_event(acme, key, ranker, ts + 20, inferences=7, images=2)])
    run_rollup(CONFIG, consumer="c1")

    assert units_by_bucket() == {(ranker.pk, False): (2, 12, 3)}


def test_it_counts_an_older_event_without_the_fields_as_zero(
    r: redis.Redis, stream: str, acme: Tenant, key: ApiKey, ranker: ModelDeployment
) -> None:
    ts = this_minute()
    feed(r, stream, [older_event(acme, key, ranker, ts), usage_event(acme, key, ranker, ts + 1, inferences=4)])

    stats = run_rollup(CONFIG, consumer="c1")

    assert stats.counted == 2
    row = UsageRollup.unscoped_objects.get()
    assert (row.requests, row.prompt_tokens, row.inferences, row.images) == (2, 10, 4, 0)


def test_it_parses_the_fields_as_redis_hands_them_back(acme: Tenant, key: ApiKey, ranker: ModelDeployment) -> None:
    text = {name: str(v) for name, v in usage_event(acme, key, ranker, time.time(), inferences=64, images=2).items()}
    parsed = parse_event("1-0", text)
    assert parsed is not None and (parsed.inferences, parsed.images) == (64, 2)
    older = {name: str(v) for name, v in older_event(acme, key, ranker, time.time()).items()}
    parsed = parse_event("1-1", older)
    assert parsed is not None and (parsed.inferences, parsed.images) == (0, 0)


# Negative, beyond one event's bound, beyond any integer column, not finite, not a number at all.
HOSTILE = [
    "-1",
    "-9223372036854775809",
    str(MAX_COUNT + 1),
    "1e40",
    "inf",
    "-inf",
    "nan",
    "many",
    "0x10",
    "4 4",
    "\x00",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_it_counts_a_hostile_value_as_zero_and_still_counts_the_request(
    value: str, r: redis.Redis, stream: str, acme: Tenant, key: ApiKey, ranker: ModelDeployment
) -> None:
    ts = this_minute()
    hostile = usage_event(acme, key, ranker, ts, prompt_tokens=10)
    hostile[usage_events.INFERENCES] = hostile[usage_events.IMAGES] = value
    feed(r, stream, [hostile, usage_event(acme, key, ranker, ts + 1, inferences=3, images=1)])

    stats = run_rollup(CONFIG, consumer="c1")

    assert (stats.counted, stats.skipped) == (2, 0)
    row = UsageRollup.unscoped_objects.get()
    assert (row.requests, row.prompt_tokens, row.inferences, row.images) == (2, 10, 3, 1)
    assert int(r.xpending(stream, GROUP)["pending"]) == 0


def test_it_sums_counts_beyond_a_32_bit_column(
    r: redis.Redis, stream: str, acme: Tenant, key: ApiKey, ranker: ModelDeployment
) -> None:
    # Each event carries the most it may; their sum needs the bigint columns.
    ts = this_minute()
    feed(r, stream, [usage_event(acme, key, ranker, ts + n, inferences=MAX_COUNT, images=MAX_COUNT) for n in range(3)])
    run_rollup(CONFIG, consumer="c1")
    feed(r, stream, [usage_event(acme, key, ranker, ts + 10, inferences=MAX_COUNT)])
    run_rollup(CONFIG, consumer="c1")

    assert units_by_bucket() == {(ranker.pk, False): (4, 4 * MAX_COUNT, 3 * MAX_COUNT)}


def test_it_counts_an_event_delivered_twice_once(
    r: redis.Redis, stream: str, acme: Tenant, key: ApiKey, ranker: ModelDeployment
) -> None:
    ts = this_minute()
    once = usage_event(acme, key, ranker, ts, rid="oip-1", inferences=32, images=0)
    feed(r, stream, [once, once])  # a retried XADD
    run_rollup(CONFIG, consumer="c1")
    feed(r, stream, [once])  # and once more, after the first was committed
    stats = run_rollup(CONFIG, consumer="c1")

    assert stats.duplicates == 1
    assert units_by_bucket() == {(ranker.pk, False): (1, 32, 0)}


def test_it_keeps_batch_lines_units_in_their_own_bucket(
    r: redis.Redis, stream: str, acme: Tenant, key: ApiKey, ranker: ModelDeployment
) -> None:
    ts = this_minute()
    batch_id = "batch_0123456789abcdef0123456789abcdef"
    feed(
        r,
        stream,
        [
            usage_event(acme, key, ranker, ts, inferences=2),
            usage_event(acme, key, ranker, ts + 1, inferences=5, images=1, batch_id=batch_id),
        ],
    )

    run_rollup(CONFIG, consumer="c1")

    assert units_by_bucket() == {(ranker.pk, False): (1, 2, 0), (ranker.pk, True): (1, 5, 1)}
