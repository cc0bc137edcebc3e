"""What the gateway reports: Prometheus text, per-second load figures in Redis, the JSON access log."""

from __future__ import annotations

import re
import time

import httpx2 as httpx
import orjson
import pytest
import redis

from tests.gateway.conftest import Key, Process, World

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
    text = httpx.get(gateway.url + "/metrics", timeout=5).text
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
    for _ in range(300):  # flushed once a second
        keys = list(redis_client.scan_iter(match=pattern))
        if keys:
            break
        time.sleep(0.01)
    assert keys
    totals: dict[str, int] = {}
    for k in keys:
        for field, value in redis_client.hgetall(k).items():
            totals[field.decode()] = totals.get(field.decode(), 0) + int(value)
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
