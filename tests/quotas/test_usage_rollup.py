"""The usage stream is rolled up into per-minute buckets, exactly once (docs/usage.md)."""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from django.utils import timezone

from controlplane.contracts.redis_names import usage_stream_key
from controlplane.redis import get_redis
from deployments.models import ModelDeployment
from quotas.models import UsageEventSeen, UsageRollup
from quotas.rollup import GROUP, RollupConfig, parse_event, roll_up_events, run_rollup
from quotas.usage_retention import prune_usage
from tenants.models import ApiKey, Tenant

pytestmark = pytest.mark.django_db

CONFIG = RollupConfig(batch_size=50, claim_idle_ms=30_000, max_seconds=30.0)


@pytest.fixture
def r(redis_prefix: str) -> redis.Redis:
    return get_redis()


@pytest.fixture
def stream(redis_prefix: str) -> str:
    return usage_stream_key(redis_prefix)


@pytest.fixture
def acme(redis_prefix: str) -> Tenant:
    return Tenant.objects.create(slug="acme", name="Acme")


@pytest.fixture
def key(acme: Tenant) -> ApiKey:
    return ApiKey.issue(tenant=acme, name="k1", scopes=["inference"])[0]


@pytest.fixture
def other_key(acme: Tenant) -> ApiKey:
    return ApiKey.issue(tenant=acme, name="k2", scopes=["inference"])[0]


@pytest.fixture
def chat(acme: Tenant) -> ModelDeployment:
    return ModelDeployment.unscoped_objects.create(tenant=acme, name="chat", model="m", min_replicas=0)


def event(
    tenant: int, key: int | None, deployment: int | None, ts: float, status: int = 200, **fields: Any
) -> dict[str, Any]:
    """One usage event as the gateway writes it (docs/contracts.md "Usage events")."""
    return {
        "rid": fields.get("rid", uuid.uuid4().hex),
        "ts": ts,
        "tenant": tenant,
        "key": "" if key is None else key,
        "deployment": "" if deployment is None else deployment,
        "revision": "",
        "status": status,
        "prompt_tokens": fields.get("prompt_tokens", 10),
        "completion_tokens": fields.get("completion_tokens", 5),
        "latency_ms": fields.get("latency_ms", 12.4),
        "ttft_ms": "",
    }


def feed(r: redis.Redis, stream: str, events: list[dict[str, Any]]) -> list[str]:
    pipe = r.pipeline(transaction=False)
    for e in events:
        pipe.xadd(stream, e)
    return [str(i) for i in pipe.execute()]


def bucket_of(e: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(int(float(e["ts"]) // 60 * 60), tz=UTC)


def expected_totals(events: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, int]]:
    """Independent reference aggregation of unique events (first occurrence of each rid)."""
    seen: set[str] = set()
    totals: dict[tuple[Any, ...], Counter[str]] = {}
    for e in events:
        if e["rid"] in seen:
            continue
        seen.add(e["rid"])
        key = (bucket_of(e), e["tenant"], e["key"] or None, e["deployment"] or None)
        c = totals.setdefault(key, Counter())
        c["requests"] += 1
        c["errors"] += int(e["status"] == 429 or e["status"] >= 500)
        c["prompt_tokens"] += e["prompt_tokens"]
        c["completion_tokens"] += e["completion_tokens"]
        c["latency_ms_sum"] += round(e["latency_ms"])
    return {k: dict(v) for k, v in totals.items()}


def actual_totals() -> dict[tuple[Any, ...], dict[str, int]]:
    fields = ("requests", "errors", "prompt_tokens", "completion_tokens", "latency_ms_sum")
    return {
        (row["minute"], row["tenant_id"], row["api_key_id"], row["deployment_id"]): {f: row[f] for f in fields}
        for row in UsageRollup.unscoped_objects.values("minute", "tenant_id", "api_key_id", "deployment_id", *fields)
    }


def pending_count(r: redis.Redis, stream: str) -> int:
    return int(r.xpending(stream, GROUP)["pending"])


def test_it_rolls_events_up_per_minute_bucket(
    r: redis.Redis, stream: str, acme: Tenant, key: ApiKey, other_key: ApiKey, chat: ModelDeployment
) -> None:
    rng = random.Random(7)
    base = (time.time() // 60 - 5) * 60
    events = [
        event(
            acme.pk,
            rng.choice([key.pk, other_key.pk]),
            rng.choice([chat.pk, None]),
            base + rng.uniform(0, 180),
            status=rng.choice([200, 200, 200, 400, 404, 429, 499, 500, 502]),
            prompt_tokens=rng.randint(0, 500),
            completion_tokens=rng.randint(0, 500),
            latency_ms=rng.uniform(1, 900),
        )
        for _ in range(300)
    ]
    feed(r, stream, events)

    stats = run_rollup(CONFIG, consumer="c1")

    assert stats.counted == len(events)
    assert actual_totals() == expected_totals(events)
    assert len({b[0] for b in actual_totals()}) >= 3  # really spread over several minutes
    assert pending_count(r, stream) == 0
    names = set(UsageRollup.unscoped_objects.filter(deployment_id=chat.pk).values_list("deployment_name", flat=True))
    assert names == {"chat"}


def test_it_adds_a_later_batch_to_the_same_bucket(
    r: redis.Redis, stream: str, acme: Tenant, key: ApiKey, chat: ModelDeployment
) -> None:
    ts = (time.time() // 60) * 60 + 1
    first = [event(acme.pk, key.pk, chat.pk, ts) for _ in range(3)]
    second = [event(acme.pk, key.pk, chat.pk, ts + 30, status=503) for _ in range(2)]
    feed(r, stream, first)
    run_rollup(CONFIG, consumer="c1")
    feed(r, stream, second)
    run_rollup(CONFIG, consumer="c1")

    row = UsageRollup.unscoped_objects.get()
    assert (row.requests, row.errors) == (5, 2)
    assert actual_totals() == expected_totals(first + second)


def test_it_counts_an_event_delivered_twice_once(
    r: redis.Redis, stream: str, acme: Tenant, key: ApiKey, chat: ModelDeployment
) -> None:
    ts = time.time()
    events = [event(acme.pk, key.pk, chat.pk, ts + i) for i in range(20)]
    feed(r, stream, [*events, *events[:5]])  # the gateway wrote some twice (a retried XADD)
    # A consumer rolls the batch up, commits, and dies before XACK.
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    _, delivered = r.xreadgroup(GROUP, "dead", {stream: ">"}, count=100)[0]
    first = roll_up_events([e for e in (parse_event(i, f) for i, f in delivered) if e is not None])
    assert first.counted == len(events)
    assert pending_count(r, stream) == len(events) + 5

    stats = run_rollup(RollupConfig(batch_size=50, claim_idle_ms=0, max_seconds=30.0), consumer="heir")

    assert stats.duplicates == len(events)  # the 25 entries hold 20 distinct ids, all already counted
    assert stats.counted == 0
    assert actual_totals() == expected_totals(events)
    assert pending_count(r, stream) == 0


def test_it_counts_the_entries_of_a_consumer_that_died_before_commit(
    r: redis.Redis, stream: str, acme: Tenant, key: ApiKey, chat: ModelDeployment
) -> None:
    events = [event(acme.pk, key.pk, chat.pk, time.time()) for _ in range(30)]
    feed(r, stream, events)
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    r.xreadgroup(GROUP, "dead", {stream: ">"}, count=100)  # read, never processed

    run_rollup(CONFIG, consumer="heir")  # not idle long enough yet: left alone
    assert pending_count(r, stream) == len(events)
    assert actual_totals() == {}
    run_rollup(RollupConfig(batch_size=7, claim_idle_ms=0, max_seconds=30.0), consumer="heir")

    assert actual_totals() == expected_totals(events)
    assert pending_count(r, stream) == 0


def test_it_skips_and_acks_deleted_tenants_and_malformed_entries(
    r: redis.Redis, stream: str, acme: Tenant, key: ApiKey, chat: ModelDeployment
) -> None:
    good = [event(acme.pk, key.pk, chat.pk, time.time()) for _ in range(3)]
    gone = event(acme.pk + 10_000, None, None, time.time())
    feed(r, stream, [*good, gone])
    r.xadd(stream, {"rid": "bad-1", "tenant": "not-a-number"})
    r.xadd(stream, {"rid": "bad-2", "tenant": acme.pk, "prompt_tokens": "1e40"})
    r.xadd(stream, {"garbage": "1"})

    stats = run_rollup(CONFIG, consumer="c1")

    assert stats.counted == 3
    assert stats.skipped == 4
    assert actual_totals() == expected_totals(good)
    assert pending_count(r, stream) == 0


def test_it_keeps_usage_of_a_deleted_key_and_deployment(r: redis.Redis, stream: str, acme: Tenant) -> None:
    ts = (time.time() // 60) * 60 + 1
    # Key and deployment ids that do not exist (deleted): the tenant's usage still counts, in one bucket.
    batch_one = [event(acme.pk, 999_999, 888_888, ts)]
    batch_two = [event(acme.pk, 999_999, 888_888, ts + 1), event(acme.pk, None, None, ts + 2)]
    feed(r, stream, batch_one)
    run_rollup(CONFIG, consumer="c1")
    feed(r, stream, batch_two)
    run_rollup(CONFIG, consumer="c1")

    rows = {(row.api_key_id, row.deployment_id): row.requests for row in UsageRollup.objects.for_tenant(acme)}
    assert rows == {(None, 888_888): 2, (None, None): 1}


def test_it_moves_last_used_at_forward_only(
    r: redis.Redis, stream: str, acme: Tenant, key: ApiKey, other_key: ApiKey, chat: ModelDeployment
) -> None:
    future = timezone.now() + timedelta(days=1)
    ApiKey.unscoped_objects.filter(pk=other_key.pk).update(last_used_at=future)
    ts = time.time()
    feed(r, stream, [event(acme.pk, key.pk, chat.pk, ts - 5), event(acme.pk, key.pk, chat.pk, ts)])
    feed(r, stream, [event(acme.pk, other_key.pk, chat.pk, ts)])

    run_rollup(CONFIG, consumer="c1")

    key.refresh_from_db()
    other_key.refresh_from_db()
    assert key.last_used_at is not None
    assert key.last_used_at.timestamp() == pytest.approx(ts, abs=0.001)
    assert other_key.last_used_at == future


def test_it_creates_the_group_on_an_empty_stream(r: redis.Redis, stream: str) -> None:
    stats = run_rollup(CONFIG, consumer="c1")

    assert stats.read == 0
    assert [g["name"] for g in r.xinfo_groups(stream)] == [GROUP]


def test_it_prunes_old_request_ids_and_trims_only_acknowledged_entries(
    r: redis.Redis, stream: str, acme: Tenant
) -> None:
    now = time.time()
    old_ms = int((now - 7200) * 1000)
    UsageEventSeen.objects.bulk_create([UsageEventSeen(request_id="old"), UsageEventSeen(request_id="new")])
    UsageEventSeen.objects.filter(request_id="old").update(seen_at=timezone.now() - timedelta(days=8))
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    r.xadd(stream, {"rid": "a"}, id=f"{old_ms}-0")
    r.xadd(stream, {"rid": "b"}, id=f"{old_ms}-1")
    r.xadd(stream, {"rid": "c"}, id=f"{old_ms}-2")
    r.xadd(stream, {"rid": "d"}, id=f"{old_ms + 1}-0")
    delivered = r.xreadgroup(GROUP, "c1", {stream: ">"}, count=3)[0][1]
    r.xack(stream, GROUP, delivered[0][0], delivered[2][0])  # b stays pending; d was never delivered

    stats = prune_usage(RollupConfig(stream_retention_s=3600), now=now)

    assert set(UsageEventSeen.objects.values_list("request_id", flat=True)) == {"new"}
    assert stats.seen_deleted == 1
    assert [entry_id for entry_id, _ in r.xrange(stream)] == [f"{old_ms}-1", f"{old_ms}-2", f"{old_ms + 1}-0"]
    r.xack(stream, GROUP, f"{old_ms}-1")
    r.xreadgroup(GROUP, "c1", {stream: ">"})
    r.xack(stream, GROUP, f"{old_ms + 1}-0")
    prune_usage(RollupConfig(stream_retention_s=3600), now=now)
    assert r.xlen(stream) == 0


def test_it_remembers_request_ids_while_an_older_entry_is_pending(r: redis.Redis, stream: str, acme: Tenant) -> None:
    now = time.time()
    UsageEventSeen.objects.create(request_id="eight-days")
    UsageEventSeen.objects.update(seen_at=timezone.now() - timedelta(days=8))
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    r.xadd(stream, {"rid": "x"}, id=f"{int((now - 10 * 86400) * 1000)}-0")
    r.xreadgroup(GROUP, "stuck", {stream: ">"})  # pending for ten days: may still be redelivered

    prune_usage(RollupConfig(), now=now)

    assert UsageEventSeen.objects.filter(request_id="eight-days").exists()
    assert r.xlen(stream) == 1
