"""A gateway whose Redis dies: fast 503 (or serving unmetered in fail-open mode), and recovery by itself."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import redis

from tests.support.gateway import Key, Process, World, free_port, start_gateway, stop

CHAT = "/v1/chat/completions"
BODY = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}


class ThrowawayRedis:
    """A redis-server of our own on a free port, so killing it harms nobody else."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        for _ in range(200):
            try:
                client.ping()
                client.close()
                return
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError("throwaway redis did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis(tmp_path)
    server.start()
    yield server
    server.kill()


def setup_world(server: ThrowawayRedis, upstream: Process) -> tuple[World, Key]:
    world = World(redis.Redis.from_url(server.url), "fdt-outage")
    tenant = world.tenant(requests_per_minute=1000)
    world.deployment(tenant, "chat", [upstream.url])
    key = world.key(tenant)
    world.publish()
    return world, key


def post(gw: Process, key: Key) -> httpx.Response:
    return httpx.post(gw.url + CHAT, json=BODY, headers={"authorization": f"Bearer {key.full}"}, timeout=10)


def test_it_answers_503_fast_while_redis_is_down_and_recovers_by_itself(
    own_redis: ThrowawayRedis, upstream: Process, tmp_path: Path
) -> None:
    world, key = setup_world(own_redis, upstream)
    gw = start_gateway(tmp_path, "fdt-outage", redis_url=own_redis.url)
    try:
        assert post(gw, key).status_code == 200
        own_redis.kill()
        start = time.monotonic()
        down = post(gw, key)
        print(f"503 while Redis is down took {(time.monotonic() - start) * 1000:.1f} ms")
        assert down.status_code == 503
        assert down.json()["error"]["code"] == "limiter_unavailable"
        assert int(down.headers["retry-after"]) >= 1
        own_redis.start()  # empty: no scripts, no snapshot; the gateway keeps the snapshot it has
        statuses = []
        for _ in range(100):
            statuses.append(post(gw, key).status_code)
            if statuses[-1] == 200:
                break
            time.sleep(0.05)
        assert statuses[-1] == 200
    finally:
        stop(gw.proc)
        world.client.close()


def test_it_serves_unmetered_while_redis_is_down_when_configured_to_fail_open(
    own_redis: ThrowawayRedis, upstream: Process, tmp_path: Path
) -> None:
    world, key = setup_world(own_redis, upstream)
    gw = start_gateway(tmp_path, "fdt-outage", redis_url=own_redis.url, FRONTDOOR_GATEWAY_FAIL_OPEN="true")
    try:
        own_redis.kill()
        assert post(gw, key).status_code == 200
    finally:
        stop(gw.proc)
        world.client.close()
