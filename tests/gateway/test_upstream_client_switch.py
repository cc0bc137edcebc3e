"""``FRONTDOOR_GATEWAY_UPSTREAM_CLIENT=library``: a real gateway process serves through the library transport.

What tells the two transports apart on the wire: aiohttp sends its default ``Accept: */*``, the hand-written
client sends only Host, Content-Type, x-request-id and Content-Length. A scripted upstream records the headers of
every request that reached it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import redis

from tests.gateway.scripted import ScriptedUpstream, scripted_upstream
from tests.support.gateway import BASE_PREFIX, Key, Process, World, clear_prefix, start_gateway, stop

CHAT: dict[str, Any] = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


@pytest.fixture(scope="module")
def switch_world(redis_client: redis.Redis) -> Iterator[World]:
    world = World(redis_client, f"{BASE_PREFIX}-lib-{uuid.uuid4().hex[:6]}")
    world.network = {"allowed_networks": ["127.0.0.0/8"], "platform_services": []}
    world.publish()
    yield world
    clear_prefix(redis_client, world.prefix)


@pytest.fixture(scope="module")
def library_gateway(session_tmp: Path, switch_world: World) -> Iterator[Process]:
    proc = start_gateway(session_tmp, switch_world.prefix, FRONTDOOR_GATEWAY_UPSTREAM_CLIENT="library")
    yield proc
    stop(proc.proc)


@pytest.fixture(scope="module")
def auto_gateway(session_tmp: Path, switch_world: World) -> Iterator[Process]:
    proc = start_gateway(session_tmp, switch_world.prefix)
    yield proc
    stop(proc.proc)


@pytest.fixture
def replica() -> Iterator[ScriptedUpstream]:
    with scripted_upstream() as upstream:
        yield upstream


def chat_key(world: World, gateway: Process, endpoint: str, runtime: str) -> Key:
    tenant = world.tenant()
    world.deployment(tenant, "chat", [endpoint], runtime=runtime)
    key = world.key(tenant)
    world.publish(gateway)
    return key


def post(gateway: Process, key: Key, body: dict[str, Any]) -> httpx.Response:
    headers = {"authorization": f"Bearer {key.full}"}
    return httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=headers, timeout=15)


@pytest.mark.parametrize("runtime", ["builtin", "external"])
def test_it_serves_chat_completions_through_the_library_when_told_to(
    switch_world: World, library_gateway: Process, replica: ScriptedUpstream, runtime: str
) -> None:
    key = chat_key(switch_world, library_gateway, replica.url, runtime)

    whole = post(library_gateway, key, CHAT)
    streamed = post(library_gateway, key, {**CHAT, "stream": True})

    assert whole.status_code == 200, whole.text
    assert whole.json()["choices"][0]["message"]["content"] == "hi"
    assert streamed.status_code == 200
    assert streamed.text.endswith("data: [DONE]\n\n")
    assert [r.headers.get("accept") for r in replica.received] == ["*/*", "*/*"]  # aiohttp's
    assert all(r.headers["x-request-id"] for r in replica.received)


def test_it_serves_plain_http_through_the_hand_written_client_by_default(
    switch_world: World, auto_gateway: Process, replica: ScriptedUpstream
) -> None:
    key = chat_key(switch_world, auto_gateway, replica.url, "builtin")

    response = post(auto_gateway, key, CHAT)

    assert response.status_code == 200, response.text
    [received] = replica.received
    assert sorted(received.headers) == ["content-length", "content-type", "host", "x-request-id"]
