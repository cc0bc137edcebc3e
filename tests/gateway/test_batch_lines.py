"""Batch lines: the control plane's worker sends each line to the inference route with the internal token.

The key that created the batch is the caller (its revocation, expiry and tenant apply), the usage event names the
batch, and a line is answered at most once: a re-run gets the first answer back, unmetered.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import redis

from controlplane.contracts import batch_wire
from controlplane.contracts.redis_names import batch_line_key
from tests.support.gateway import Key, Process, World, start_gateway, stop, usage_events

TOKEN = "batch-lines-test-internal-token-0123456789"
BODY: dict[str, Any] = {"model": "chat-small", "messages": [{"role": "user", "content": "one line"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def gateway(session_tmp: Path, prefix: str, world: World) -> Iterator[Process]:
    """A gateway of this module's own, which knows the internal token."""
    proc = start_gateway(session_tmp, prefix, FRONTDOOR_INTERNAL_TOKEN=TOKEN)
    yield proc
    stop(proc.proc)


@pytest.fixture
def acme(world: World, gateway: Process, upstream: Process) -> Key:
    """A tenant with a deployment and the key that created the batch."""
    tenant = world.tenant()
    world.deployment(tenant, "chat-small", [upstream.url])
    key = world.key(tenant)
    world.publish(gateway)
    return key


def line_id() -> str:
    return f"line_{uuid.uuid4().hex[:20]}"


def send_line(
    gateway: Process,
    key: Key,
    rid: str,
    body: dict[str, Any] | None = None,
    token: str = TOKEN,
    batch: str = "batch_abc123",
    **headers: str,
) -> httpx.Response:
    sent = {
        batch_wire.TOKEN_HEADER: token,
        batch_wire.ON_BEHALF_HEADER: key.key_id,
        batch_wire.BATCH_HEADER: batch,
        "x-request-id": rid,
        **headers,
    }
    return httpx.post(gateway.url + "/v1/chat/completions", json=body or BODY, headers=sent, timeout=10)


def events_of(client: redis.Redis, prefix: str, key: Key, count: int) -> list[dict[str, str]]:
    """The key's usage events once ``count`` are there (they follow the answer), bounded."""
    for _ in range(200):
        events = usage_events(client, prefix, key)
        if len(events) >= count:
            return events
        time.sleep(0.01)
    return usage_events(client, prefix, key)


def test_it_serves_a_line_on_behalf_of_the_batchs_key_and_meters_it_for_the_batch(
    gateway: Process, acme: Key, redis_client: redis.Redis, prefix: str
) -> None:
    rid = line_id()
    reply = send_line(gateway, acme, rid, batch="batch_meter1")
    assert reply.status_code == 200, reply.text
    assert reply.json()["model"] == "chat-small"
    assert reply.headers["x-request-id"] == rid
    assert batch_wire.REPLAYED_HEADER not in reply.headers
    [event] = events_of(redis_client, prefix, acme, 1)
    assert event["rid"] == rid
    assert event["batch"] == "batch_meter1"
    assert event["status"] == "200"


def test_it_replays_a_line_sent_again_without_metering_it_twice(
    gateway: Process, acme: Key, redis_client: redis.Redis, prefix: str
) -> None:
    rid = line_id()
    first = send_line(gateway, acme, rid)
    assert first.status_code == 200
    events_of(redis_client, prefix, acme, 1)
    # The answer is kept right after the usage event: until then the key holds the claim (its lease, a minute).
    deadline = time.monotonic() + 5
    while (kept_ms := redis_client.pttl(batch_line_key(prefix, rid))) < 172_000_000 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert 172_000_000 < kept_ms <= 172_800_000  # FRONTDOOR_BATCH_REPLAY_TTL_S, two days by default
    again = send_line(gateway, acme, rid)
    assert again.status_code == 200
    assert again.content == first.content
    assert again.headers[batch_wire.REPLAYED_HEADER] == "true"
    assert again.headers["content-type"] == "application/json"
    time.sleep(0.2)  # a second event would be written within this
    assert [e["rid"] for e in usage_events(redis_client, prefix, acme)] == [rid]


def test_it_refuses_a_wrong_internal_token(gateway: Process, acme: Key, redis_client: redis.Redis, prefix: str) -> None:
    rid = line_id()
    reply = send_line(gateway, acme, rid, token="not-the-token-" + "x" * 30)
    assert reply.status_code == 401
    assert reply.json()["error"]["code"] == "invalid_api_key"
    assert not redis_client.exists(batch_line_key(prefix, rid))


def test_it_stops_a_line_of_a_revoked_key(world: World, gateway: Process, acme: Key) -> None:
    world.keys[acme.key_id]["revoked"] = True
    world.publish(gateway)
    reply = send_line(gateway, acme, line_id())
    assert reply.status_code == 401
    assert reply.json()["error"]["code"] == "invalid_api_key"


def test_it_stops_a_line_of_a_suspended_tenant(world: World, gateway: Process, acme: Key) -> None:
    world.tenants[acme.tenant]["status"] = "suspended"
    world.publish(gateway)
    reply = send_line(gateway, acme, line_id())
    assert reply.status_code == 403
    assert reply.json()["error"]["code"] == "tenant_suspended"


def test_it_answers_409_while_another_try_of_the_line_is_in_flight(
    gateway: Process, acme: Key, redis_client: redis.Redis, prefix: str
) -> None:
    rid = line_id()
    redis_client.set(batch_line_key(prefix, rid), batch_wire.PENDING, px=30_000)
    reply = send_line(gateway, acme, rid)
    assert reply.status_code == 409
    assert reply.json()["error"]["code"] == "batch_line_in_progress"
    assert reply.headers["retry-after"] == "1"
    assert usage_events(redis_client, prefix, acme) == []


def test_it_keeps_no_answer_the_worker_retries(
    world: World, gateway: Process, upstream: Process, redis_client: redis.Redis, prefix: str
) -> None:
    tenant = world.tenant()
    world.deployment(tenant, "chat-small", [upstream.url])
    key = world.key(tenant, batch_requests_per_minute=1)  # batch lines meet the batch window
    world.publish(gateway)
    assert send_line(gateway, key, line_id()).status_code == 200
    rid = line_id()
    refused = send_line(gateway, key, rid)
    assert refused.status_code == 429
    assert not redis_client.exists(batch_line_key(prefix, rid))  # so that the retry runs the line again


def test_a_line_waits_for_spare_capacity_and_interactive_requests_do_not(
    world: World, gateway: Process, upstream: Process, redis_client: redis.Redis, prefix: str
) -> None:
    tenant = world.tenant()
    deployment = world.deployment(tenant, "chat-small", [upstream.url])
    key = world.key(tenant)
    deployment["batch_per_replica"], deployment["batch_replicas"] = 0.7, 1  # capacity floor(0.7 x 1) = 0
    world.publish(gateway)
    rid = line_id()
    waiting = send_line(gateway, key, rid)
    assert waiting.status_code == 429 and waiting.json()["error"]["code"] == "batch_capacity_busy"
    assert waiting.headers["retry-after"] == "1"
    assert not redis_client.exists(batch_line_key(prefix, rid))
    interactive = httpx.post(
        gateway.url + "/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key.full}"}, timeout=10
    )
    assert interactive.status_code == 200
    deployment["batch_per_replica"] = 2.0  # one replica ready: capacity 2, spare now
    world.publish(gateway)
    assert send_line(gateway, key, rid).status_code == 200


def test_it_refuses_a_streamed_line(gateway: Process, acme: Key, redis_client: redis.Redis, prefix: str) -> None:
    rid = line_id()
    reply = send_line(gateway, acme, rid, {**BODY, "stream": True})
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "stream"
    assert not redis_client.exists(batch_line_key(prefix, rid))


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (batch_wire.ON_BEHALF_HEADER, ""),
        (batch_wire.ON_BEHALF_HEADER, "key/../x"),
        (batch_wire.BATCH_HEADER, "not-a-batch"),
        (batch_wire.BATCH_HEADER, "batch_" + "x" * 60),
        ("x-request-id", "line.with.dots"),
        ("x-request-id", "x" * 65),
    ],
)
def test_it_refuses_a_line_that_does_not_name_its_key_batch_and_id(
    gateway: Process, acme: Key, header: str, value: str
) -> None:
    sent = {
        batch_wire.TOKEN_HEADER: TOKEN,
        batch_wire.ON_BEHALF_HEADER: acme.key_id,
        batch_wire.BATCH_HEADER: "batch_abc",
        "x-request-id": line_id(),
        header: value,
    }
    reply = httpx.post(gateway.url + "/v1/chat/completions", json=BODY, headers=sent, timeout=10)
    assert reply.status_code == 400
    assert reply.json()["error"]["type"] == "invalid_request_error"


def test_it_takes_a_client_naming_a_batch_without_the_token_for_the_client(
    world: World, gateway: Process, acme: Key, redis_client: redis.Redis, prefix: str
) -> None:
    other = world.key(acme.tenant)
    world.publish(gateway)
    rid = line_id()
    headers = {
        "authorization": f"Bearer {other.full}",
        batch_wire.ON_BEHALF_HEADER: acme.key_id,
        batch_wire.BATCH_HEADER: "batch_forged",
        "x-request-id": rid,
    }
    reply = httpx.post(gateway.url + "/v1/chat/completions", json=BODY, headers=headers, timeout=10)
    assert reply.status_code == 200
    [event] = events_of(redis_client, prefix, other, 1)
    assert event["batch"] == ""
    assert event["rid"].startswith(rid + ".")  # a client's own id, made unique as always
    assert usage_events(redis_client, prefix, acme) == []
    assert not redis_client.exists(batch_line_key(prefix, rid))
    assert send_line(gateway, acme, line_id(), token="").status_code == 401  # an empty token is no token
