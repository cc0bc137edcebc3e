"""Upstream trouble: refused connections, 500s, stalls, client disconnects mid-stream, cold deployments."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import orjson
import pytest
import redis

from controlplane.contracts.redis_names import WAKE, channel, wake_key
from tests.support.gateway import (
    REDIS_URL,
    Key,
    Process,
    World,
    free_port,
    start_modelserver,
    stop,
    usage_events,
)

CHAT = "/v1/chat/completions"


def chat(gateway: Process, key: Key, model: str, **extra: object) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 3, **extra}
    return httpx.post(gateway.url + CHAT, json=body, headers={"authorization": f"Bearer {key.full}"}, timeout=15)


def error_code(response: httpx.Response) -> str:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] is None
    return str(error["code"])


@pytest.fixture(scope="module")
def slow_upstream(session_tmp: Path) -> Iterator[Process]:
    """Paced like a real model: 20 tokens/s, so a stream lasts long enough to abandon it."""
    proc = start_modelserver(session_tmp, "--tokens-per-s", "20")
    yield proc
    stop(proc.proc)


@pytest.fixture(scope="module")
def broken_upstream(session_tmp: Path) -> Iterator[Process]:
    proc = start_modelserver(session_tmp, "--error-rate", "1.0")
    yield proc
    stop(proc.proc)


@pytest.fixture(scope="module")
def stalled_upstream(session_tmp: Path) -> Iterator[Process]:
    proc = start_modelserver(session_tmp, "--stall-ms", "5000")
    yield proc
    stop(proc.proc)


def cancelled_count(upstream: Process) -> int:
    text = httpx.get(upstream.url + "/metrics", timeout=5).text
    match = re.search(r"^modelserver_requests_cancelled_total (\d+)", text, re.M)
    assert match is not None
    return int(match.group(1))


def wait_for_events(client: redis.Redis, prefix: str, key: Key, count: int) -> list[dict[str, str]]:
    for _ in range(300):
        events = usage_events(client, prefix, key)
        if len(events) >= count:
            return events
        time.sleep(0.01)
    return usage_events(client, prefix, key)


def test_it_serves_from_another_replica_when_one_refuses_connections(
    world: World, gateway: Process, upstream: Process
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    tenant = world.tenant()
    world.deployment(tenant, "chat", [dead, upstream.url])
    key = world.key(tenant)
    world.publish(gateway)
    statuses = [chat(gateway, key, "chat").status_code for _ in range(20)]
    assert statuses == [200] * 20
    metrics = httpx.get(gateway.metrics_url + "/metrics", timeout=5).text
    connect_errors = re.findall(
        rf'frontdoor_gateway_upstream_errors_total\{{tenant="{tenant}",deployment="chat",kind="connect"\}} (\d+)',
        metrics,
    )
    # The dead replica was tried at most once: after refusing it, it is ejected for a while.
    assert sum(int(n) for n in connect_errors) <= 1


def test_it_answers_503_with_retry_after_when_every_replica_refuses(world: World, gateway: Process) -> None:
    # A deployment that never scales to zero: refusals are a failure, not a start (tests/gateway/test_refused_cold.py).
    tenant = world.tenant()
    dead = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    world.deployment(tenant, "chat", dead, min_replicas=1)
    key = world.key(tenant)
    world.publish(gateway)
    response = chat(gateway, key, "chat")
    assert response.status_code == 503
    assert error_code(response) == "no_replica_available"
    assert int(response.headers["retry-after"]) >= 1


def test_it_maps_an_upstream_500_to_a_502(
    world: World, gateway: Process, broken_upstream: Process, redis_client: redis.Redis, prefix: str
) -> None:
    tenant = world.tenant()
    world.deployment(tenant, "chat", [broken_upstream.url])
    key = world.key(tenant)
    world.publish(gateway)
    response = chat(gateway, key, "chat")
    assert response.status_code == 502
    assert error_code(response) == "upstream_error"
    assert response.headers["x-request-id"]
    [event] = wait_for_events(redis_client, prefix, key, 1)
    assert event["status"] == "502"


def test_it_answers_504_when_the_deployment_timeout_passes(
    world: World, gateway: Process, stalled_upstream: Process
) -> None:
    tenant = world.tenant()
    world.deployment(tenant, "chat", [stalled_upstream.url], timeout_s=0.5)
    key = world.key(tenant)
    world.publish(gateway)
    response = chat(gateway, key, "chat")
    assert response.status_code == 504
    assert error_code(response) == "upstream_timeout"


def test_it_cancels_the_upstream_and_meters_relayed_tokens_when_the_client_disconnects(
    world: World, gateway: Process, slow_upstream: Process, redis_client: redis.Redis, prefix: str
) -> None:
    tenant = world.tenant()
    world.deployment(tenant, "chat", [slow_upstream.url])
    key = world.key(tenant)
    world.publish(gateway)
    before = cancelled_count(slow_upstream)
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": "write a long story"}],
        "max_tokens": 400,
        "stream": True,
    }
    received = 0
    with httpx.stream(
        "POST", gateway.url + CHAT, json=body, headers={"authorization": f"Bearer {key.full}"}, timeout=15
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                chunk = orjson.loads(line[6:])
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    received += 1
            if received >= 3:
                break
    disconnected = time.monotonic()
    while cancelled_count(slow_upstream) == before and time.monotonic() - disconnected < 1.0:
        time.sleep(0.02)
    elapsed = time.monotonic() - disconnected
    print(f"upstream cancellation seen {elapsed * 1000:.0f} ms after the client left")
    assert cancelled_count(slow_upstream) == before + 1
    [event] = wait_for_events(redis_client, prefix, key, 1)
    assert event["status"] == "499"
    assert received <= int(event["completion_tokens"]) < 400
    assert int(event["prompt_tokens"]) > 0


def test_it_holds_a_request_for_a_cold_deployment_and_serves_it_once_a_replica_appears(
    world: World, gateway: Process, upstream: Process, redis_client: redis.Redis, prefix: str
) -> None:
    tenant = world.tenant()
    dep = world.deployment(tenant, "sleepy", [])
    key = world.key(tenant)
    world.publish(gateway)
    wake = redis_client.pubsub(ignore_subscribe_messages=True)
    wake.subscribe(channel(prefix, REDIS_URL, WAKE))
    result: dict[str, httpx.Response] = {}
    waiter = threading.Thread(target=lambda: result.update(r=chat(gateway, key, "sleepy")))
    waiter.start()
    message = None
    for _ in range(100):
        message = wake.get_message(timeout=0.05)
        if message is not None:
            break
    wake.close()
    assert message is not None and message["data"] == str(dep["id"]).encode()
    assert redis_client.ttl(wake_key(prefix, dep["id"])) > 0
    dep["revisions"][0]["endpoints"] = [upstream.url]
    world.publish()
    waiter.join(10)
    assert result["r"].status_code == 200


def test_it_answers_503_when_a_cold_deployment_does_not_wake_in_time(world: World, gateway: Process) -> None:
    tenant = world.tenant()
    world.deployment(tenant, "frozen", [])
    key = world.key(tenant)
    world.publish(gateway)
    response = chat(gateway, key, "frozen")  # the test gateway holds for 3 s
    assert response.status_code == 503
    assert error_code(response) == "deployment_starting"
    assert int(response.headers["retry-after"]) >= 1


@pytest.fixture(scope="module")
def truncating_upstream(session_tmp: Path) -> Iterator[Process]:
    proc = start_modelserver(session_tmp, "--truncate-after", "4")
    yield proc
    stop(proc.proc)


def test_it_meters_the_relayed_tokens_of_a_stream_the_upstream_cut_short(
    world: World, gateway: Process, truncating_upstream: Process, redis_client: redis.Redis, prefix: str
) -> None:
    tenant = world.tenant()
    world.deployment(tenant, "chat", [truncating_upstream.url])
    key = world.key(tenant)
    world.publish(gateway)
    body = {"model": "chat", "messages": [{"role": "user", "content": "go on"}], "max_tokens": 50, "stream": True}
    with httpx.stream(
        "POST", gateway.url + CHAT, json=body, headers={"authorization": f"Bearer {key.full}"}, timeout=15
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert "data: [DONE]" not in lines
    *chunks, last = (orjson.loads(line[6:]) for line in lines)
    assert last["error"]["code"] == "upstream_disconnected"
    relayed = sum(1 for chunk in chunks if chunk["choices"][0]["delta"].get("content"))
    [event] = wait_for_events(redis_client, prefix, key, 1)
    assert event["status"] == "502"
    assert int(event["completion_tokens"]) == relayed


def test_it_refuses_past_the_deployments_concurrency_across_requests(
    world: World, gateway: Process, slow_upstream: Process
) -> None:
    tenant = world.tenant()
    world.deployment(tenant, "chat", [slow_upstream.url], max_concurrent=1)
    key = world.key(tenant)
    world.publish(gateway)
    body = {"model": "chat", "messages": [{"role": "user", "content": "long"}], "max_tokens": 20, "stream": True}
    with httpx.stream(
        "POST", gateway.url + CHAT, json=body, headers={"authorization": f"Bearer {key.full}"}, timeout=15
    ) as first:
        assert first.status_code == 200
        second = chat(gateway, key, "chat")
        assert second.status_code == 429
        assert error_code(second) == "concurrency_limit_exceeded"
        assert int(second.headers["retry-after"]) >= 1
        for _ in first.iter_lines():
            pass
    assert chat(gateway, key, "chat").status_code == 200  # the lease went back when the stream ended
