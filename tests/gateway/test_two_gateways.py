"""Two gateway processes sharing one Redis: revocation reaches both within 2 s, rate limits are exact across both."""

from __future__ import annotations

import asyncio
import time

import httpx2 as httpx
import pytest

from tests.support.gateway import Key, Process, World

CHAT = "/v1/chat/completions"
BODY = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
REVOCATION_DEADLINE_S = 2.0  # the contract: a revoked key stops working everywhere within 2 s


@pytest.fixture(scope="module")
def tenant(world: World, gateway: Process, second_gateway: Process, upstream: Process) -> str:
    slug = world.tenant()
    world.deployment(slug, "chat", [upstream.url])
    world.publish(gateway, second_gateway)
    return slug


def status(gw: Process, key: Key) -> int:
    return httpx.post(gw.url + CHAT, json=BODY, headers={"authorization": f"Bearer {key.full}"}, timeout=5).status_code


def seconds_until_refused(gw: Process, key: Key, limit_s: float = 5.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        if status(gw, key) == 401:
            return time.monotonic() - start
        time.sleep(0.01)
    return float("inf")


def test_it_stops_a_revoked_key_on_the_other_gateway_within_2_s(
    world: World, gateway: Process, second_gateway: Process, tenant: str
) -> None:
    key = world.key(tenant)
    world.publish(gateway, second_gateway)
    assert status(second_gateway, key) == 200  # verified and cached by the second process
    world.keys[key.key_id]["revoked"] = True
    world.publish()  # published through the first gateway's control plane; nobody waits for the second
    elapsed = seconds_until_refused(second_gateway, key)
    print(f"revocation reached the second gateway in {elapsed * 1000:.0f} ms")
    assert elapsed <= REVOCATION_DEADLINE_S


def test_it_picks_up_a_snapshot_whose_notice_was_lost_within_2_s(
    world: World, gateway: Process, second_gateway: Process, tenant: str
) -> None:
    key = world.key(tenant)
    world.publish(gateway, second_gateway)
    assert status(second_gateway, key) == 200
    world.keys[key.key_id]["revoked"] = True
    # Store the snapshot and version as the control plane does, but lose the notice: the 1 s poll must catch it.
    world.publish(notify_channel=f"{world.prefix}:db0:nobody-listens")
    elapsed = seconds_until_refused(second_gateway, key)
    print(f"a snapshot without its notice was loaded in {elapsed * 1000:.0f} ms")
    assert elapsed <= REVOCATION_DEADLINE_S


async def _burst(gateways: list[Process], key: Key, total: int) -> list[int]:
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    headers = {"authorization": f"Bearer {key.full}"}
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one(i: int) -> int:
            response = await client.post(gateways[i % len(gateways)].url + CHAT, json=BODY, headers=headers)
            return response.status_code

        return list(await asyncio.gather(*(one(i) for i in range(total))))


@pytest.mark.slow
def test_it_admits_exactly_the_rpm_across_two_gateway_processes(
    world: World, gateway: Process, second_gateway: Process, tenant: str
) -> None:
    for trial in range(3):
        key = world.key(tenant, requests_per_minute=100)
        world.publish(gateway, second_gateway)
        statuses = asyncio.run(_burst([gateway, second_gateway], key, 500))
        admitted = statuses.count(200)
        print(f"trial {trial}: {admitted} admitted, {statuses.count(429)} refused of {len(statuses)}")
        assert admitted == 100
        assert statuses.count(429) == 400
