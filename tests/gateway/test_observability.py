"""What the gateway reports: Prometheus text, per-second load figures in Redis, the JSON access log."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx2 as httpx
import orjson
import pytest
import redis

from tests.support.gateway import Key, Process, World

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def served(world: World, gateway: Process, upstream: Process) -> tuple[Key, dict[str, object]]:
    tenant = world.tenant()
    dep = world.deployment(tenant, "observed", [upstream.url])
    key = world.key(tenant)
    world.publish(gateway)
    body = {"model": "observed", "messages": [{"role": "user", "content": "count me"}], "max_tokens": 3}
    for _ in range(3):
        r = httpx.post(gateway.url + CHAT, json=body, headers={"authorization": f"Bearer {key.full}"}, timeout=10)
        assert r.status_code == 200
    return key, dep


def test_it_exposes_request_latency_and_token_series(gateway: Process, served: tuple[Key, dict[str, object]]) -> None:
    key, _ = served
    text = httpx.get(gateway.metrics_url + "/metrics", timeout=5).text
    labels = f'tenant="{key.tenant}",deployment="observed"'
    assert f'frontdoor_gateway_requests_total{{{labels},status="200"}} 3' in text
    assert f"frontdoor_gateway_request_duration_seconds_count{{{labels}}} 3" in text
    assert re.search(rf'frontdoor_gateway_tokens_total\{{{labels},kind="completion"\}} \d+', text)
    assert f"frontdoor_gateway_in_flight_requests{{{labels}}} 0" in text
    assert "# TYPE frontdoor_gateway_limit_rejections_total counter" in text


def test_it_flushes_load_figures_per_deployment_revision_and_second(
    gateway: Process, served: tuple[Key, dict[str, object]], redis_client: redis.Redis, prefix: str
) -> None:
    _, dep = served
    revision = dep["revisions"][0]["id"]  # type: ignore[index]
    pattern = f"{prefix}:load:{dep['id']}:{revision}:*"
    keys: list[bytes] = []
    totals: dict[str, int] = {}
    for _ in range(300):  # flushed once a second; the three requests may land in two flushes
        keys = list(redis_client.scan_iter(match=pattern))
        totals = {}
        for k in keys:
            for field, value in redis_client.hgetall(k).items():
                totals[field.decode()] = totals.get(field.decode(), 0) + int(value)
        if totals.get("requests", 0) >= 3:
            break
        time.sleep(0.01)
    assert keys
    for k in keys:
        assert 0 < redis_client.ttl(k) <= 15 * 60
    assert totals["requests"] == 3
    assert totals["le_inf"] == 3
    assert totals.get("errors", 0) == 0


def test_it_logs_one_json_line_per_request_without_the_key(
    gateway: Process, served: tuple[Key, dict[str, object]]
) -> None:
    key, _ = served
    lines: list[dict[str, object]] = []
    for _ in range(300):  # the log is flushed once a second
        lines = [
            orjson.loads(line) for line in gateway.log().splitlines() if line.startswith("{") and '"observed"' in line
        ]
        if len(lines) >= 3:
            break
        time.sleep(0.01)
    assert len(lines) == 3
    assert {line["status"] for line in lines} == {200}
    assert all(line["tenant"] == key.tenant and line["request_id"] for line in lines)
    assert key.full not in gateway.log()
    assert key.full.rsplit("_", 1)[1] not in gateway.log()


def _load_totals(redis_client: redis.Redis, pattern: str, until: Callable[[dict[str, int]], bool]) -> dict[str, int]:
    """Sum the load hashes matching ``pattern``, waiting (bounded) for the once-a-second flush to satisfy ``until``."""
    totals: dict[str, int] = {}
    for _ in range(300):
        totals = {}
        for k in redis_client.scan_iter(match=pattern):
            for field, value in redis_client.hgetall(k).items():
                totals[field.decode()] = totals.get(field.decode(), 0) + int(value)
        if until(totals):
            break
        time.sleep(0.01)
    return totals


def test_it_records_a_ttft_bucket_for_a_streamed_request(
    world: World, gateway: Process, upstream: Process, redis_client: redis.Redis, prefix: str
) -> None:
    tenant = world.tenant()
    dep = world.deployment(tenant, "streamed", [upstream.url])
    key = world.key(tenant)
    world.publish(gateway)
    body = {"model": "streamed", "messages": [{"role": "user", "content": "first token"}], "max_tokens": 3,
            "stream": True}
    with httpx.stream("POST", gateway.url + CHAT, json=body, headers={"authorization": f"Bearer {key.full}"},
                      timeout=10) as r:
        assert r.status_code == 200
        assert "data: [DONE]" in r.read().decode()
    revision = dep["revisions"][0]["id"]  # type: ignore[index]
    totals = _load_totals(redis_client, f"{prefix}:load:{dep['id']}:{revision}:*", lambda t: "ttft_count" in t)
    assert totals["requests"] == 1 and totals["ttft_count"] == 1
    assert totals["ttft_le_inf"] == 1
    # Cumulative: every bound at or above the measured TTFT counts it, and the sum lies under the first such bound.
    finite = [name.removeprefix("ttft_le_") for name in totals if name.startswith("ttft_le_")]
    ttft_bounds = sorted(int(bound) for bound in finite if bound.isdigit())
    assert ttft_bounds and all(totals[f"ttft_le_{b}"] == 1 for b in ttft_bounds)
    assert totals["ttft_ms_sum"] <= ttft_bounds[0]
