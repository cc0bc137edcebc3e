"""Names of external endpoints: resolved once through the gateway's resolver, connected at the address checked.

The gateway runs in this process (uvicorn on a thread) so the test can hand it a resolver: no name is looked up
for real. Two servers share one port: the good one on 127.0.0.1, the one a rebinding attacker would aim at on
127.0.0.2 (outside the allowed network); the second must never see a connection.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import httpx2 as httpx
import pytest
import redis
import uvicorn

from gateway.app import GatewayApp, create_app
from gateway.config import GatewayConfig
from tests.gateway.scripted import ScriptedUpstream, scripted_upstream
from tests.support.gateway import BASE_PREFIX, PEPPER, REDIS_URL, World, clear_prefix, free_port


class FakeResolver:
    """Answers each lookup with the next list of ``answers`` (the last one repeats) and records the lookups."""

    def __init__(self) -> None:
        self.answers: list[list[str]] = []
        self.lookups: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append((host, port))
        return self.answers[min(len(self.lookups), len(self.answers)) - 1]


@pytest.fixture(scope="module")
def dns_world(redis_client: redis.Redis) -> Iterator[World]:
    w = World(redis_client, f"{BASE_PREFIX}-dns-{uuid.uuid4().hex[:6]}")
    w.network = {"allowed_networks": ["127.0.0.1/32"], "platform_services": []}
    w.publish()
    yield w
    clear_prefix(redis_client, w.prefix)


@pytest.fixture(scope="module")
def resolver() -> FakeResolver:
    return FakeResolver()


@pytest.fixture(scope="module")
def dns_gateway(dns_world: World, resolver: FakeResolver) -> Iterator[tuple[GatewayApp, str]]:
    port = free_port()
    config = GatewayConfig(
        redis_url=REDIS_URL, redis_prefix=dns_world.prefix, key_pepper=PEPPER, listen_port=port, access_log=False
    )
    app = create_app(config, resolver)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(400):
        try:
            if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    yield app, url
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def servers() -> Iterator[tuple[ScriptedUpstream, ScriptedUpstream]]:
    with scripted_upstream("127.0.0.1") as good, scripted_upstream("127.0.0.2", good.port) as evil:
        yield good, evil


def publish(world: World, app: GatewayApp, endpoint: str) -> str:
    """An external deployment at ``endpoint`` and a key for it; waits until the gateway serves the snapshot."""
    tenant = world.tenant()
    world.deployment(tenant, "named", [endpoint], runtime="external")
    key = world.key(tenant)
    version = world.publish()
    for _ in range(500):
        if app.context is not None and app.context.store.current.version >= version:
            break
        time.sleep(0.01)
    return key.full


def chat(url: str, key: str) -> httpx.Response:
    body = {"model": "named", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    return httpx.post(url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=15)


def test_it_connects_to_the_address_it_checked_when_the_name_rebinds(
    dns_world: World,
    dns_gateway: tuple[GatewayApp, str],
    resolver: FakeResolver,
    servers: tuple[ScriptedUpstream, ScriptedUpstream],
) -> None:
    app, url = dns_gateway
    good, evil = servers
    resolver.lookups.clear()
    resolver.answers = [["127.0.0.1"], ["127.0.0.2"]]  # an honest first answer, then a rebinding one
    key = publish(dns_world, app, f"http://localhost:{good.port}")

    first, second = chat(url, key), chat(url, key)

    assert (first.status_code, second.status_code) == (200, 200)
    assert resolver.lookups == [("localhost", good.port)]  # one lookup: the check's, none at connect
    assert [r.headers["host"] for r in good.received] == [f"localhost:{good.port}"] * 2
    assert evil.connections == 0


def test_it_refuses_the_rebound_address_when_the_name_is_checked_again(
    dns_world: World,
    dns_gateway: tuple[GatewayApp, str],
    resolver: FakeResolver,
    servers: tuple[ScriptedUpstream, ScriptedUpstream],
) -> None:
    app, url = dns_gateway
    good, evil = servers
    resolver.lookups.clear()
    resolver.answers = [["127.0.0.1"], ["127.0.0.2"]]
    key = publish(dns_world, app, f"http://localhost:{good.port}")
    assert chat(url, key).status_code == 200
    publish(dns_world, app, "http://127.0.0.1:1")  # a new snapshot: every check is made anew

    response = chat(url, key)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unavailable"
    assert len(resolver.lookups) == 2
    assert len(good.received) == 1
    assert evil.connections == 0


def test_it_refuses_a_name_when_any_of_its_addresses_is_refused(
    dns_world: World,
    dns_gateway: tuple[GatewayApp, str],
    resolver: FakeResolver,
    servers: tuple[ScriptedUpstream, ScriptedUpstream],
) -> None:
    app, url = dns_gateway
    good, evil = servers
    resolver.lookups.clear()
    resolver.answers = [["127.0.0.1", "127.0.0.2"]]
    key = publish(dns_world, app, f"http://localhost:{good.port}")

    response = chat(url, key)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unavailable"
    assert resolver.lookups == [("localhost", good.port)]
    assert good.connections == evil.connections == 0


def test_it_refuses_a_name_that_does_not_resolve(
    dns_world: World, dns_gateway: tuple[GatewayApp, str], resolver: FakeResolver
) -> None:
    app, url = dns_gateway
    resolver.lookups.clear()
    resolver.answers = [[]]
    key = publish(dns_world, app, f"http://localhost:{free_port()}")

    response = chat(url, key)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unavailable"
    assert len(resolver.lookups) == 1
