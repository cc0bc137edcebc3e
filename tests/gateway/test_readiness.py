"""Liveness and readiness: without a config snapshot the gateway is alive but not ready, and refuses with 503.

A gateway that knows no key must not answer 401 (clients do not retry it, and the key is fine): until a snapshot is
loaded, every route that authenticates answers 503 ``snapshot_unavailable`` with ``Retry-After``, before auth.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import redis

from controlplane.contracts.keyformat import generate_key
from tests.support.gateway import BASE_PREFIX, Process, World, clear_prefix, free_port, start_gateway, stop

CHAT_BODY = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}


def assert_snapshot_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json() == {
        "error": {
            "message": "The gateway has not loaded its configuration yet; retry shortly.",
            "type": "service_unavailable_error",
            "param": None,
            "code": "snapshot_unavailable",
        }
    }
    assert int(response.headers["retry-after"]) >= 1


@pytest.fixture
def unreachable_gateway(tmp_path: Path) -> Iterator[Process]:
    """A gateway whose Redis is a loopback port nobody listens on."""
    proc = start_gateway(tmp_path, f"{BASE_PREFIX}-nowhere", redis_url=f"redis://127.0.0.1:{free_port()}/0")
    yield proc
    stop(proc.proc)


@pytest.fixture
def fresh_world(redis_client: redis.Redis) -> Iterator[World]:
    """A prefix on the real Redis on which nothing was published yet."""
    w = World(redis_client, f"{BASE_PREFIX}-ready-{uuid.uuid4().hex[:6]}")
    yield w
    clear_prefix(redis_client, w.prefix)


def test_it_is_alive_but_not_ready_and_answers_503_without_redis(unreachable_gateway: Process) -> None:
    gw = unreachable_gateway
    well_formed, _ = generate_key("test")  # a key in the right format (no snapshot could know it anyway)

    assert httpx.get(gw.url + "/healthz", timeout=5).status_code == 200
    ready = httpx.get(gw.url + "/readyz", timeout=5)
    assert ready.status_code == 503
    assert ready.json() == {"status": "snapshot_unavailable", "snapshot_version": 0}
    headers = {"authorization": f"Bearer {well_formed}"}
    assert_snapshot_unavailable(httpx.post(gw.url + "/v1/chat/completions", json=CHAT_BODY, headers=headers, timeout=5))
    assert_snapshot_unavailable(httpx.post(gw.url + "/v1/embeddings", json={"input": "x"}, headers=headers, timeout=5))
    assert_snapshot_unavailable(httpx.get(gw.url + "/v1/models", headers=headers, timeout=5))
    # Before auth: no key at all gets the same answer, not a 401.
    assert_snapshot_unavailable(httpx.post(gw.url + "/v1/chat/completions", json=CHAT_BODY, timeout=5))


def test_it_becomes_ready_once_a_snapshot_is_published(tmp_path: Path, fresh_world: World) -> None:
    gw = start_gateway(tmp_path, fresh_world.prefix)
    try:
        tenant = fresh_world.tenant()
        key = fresh_world.key(tenant, scopes=("read",))
        headers = {"authorization": f"Bearer {key.full}"}
        assert httpx.get(gw.url + "/readyz", timeout=5).status_code == 503
        assert_snapshot_unavailable(httpx.get(gw.url + "/v1/models", headers=headers, timeout=5))

        version = fresh_world.publish(gw)

        ready = httpx.get(gw.url + "/readyz", timeout=5)
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "snapshot_version": version}
        assert httpx.get(gw.url + "/healthz", timeout=5).json() == {"status": "ok", "snapshot_version": version}
        assert httpx.get(gw.url + "/v1/models", headers=headers, timeout=5).status_code == 200
    finally:
        stop(gw.proc)


def test_it_is_ready_with_the_session_snapshot(gateway: Process, world: World) -> None:
    version = world.publish(gateway)
    ready = httpx.get(gateway.url + "/readyz", timeout=5)
    assert ready.status_code == 200
    assert ready.json()["snapshot_version"] >= version
