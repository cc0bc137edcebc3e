"""External endpoints (runtime "external") meet the address policy at connect, and fail with one uniform answer.

Every address here is on 127.0.0.0/8: the refused ones are refused before any connection (the target servers
count what reached them, or the gateway's log names the policy's reason); the allowed ones are allowed through the
snapshot's ``network.allowed_networks``, as an operator would.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx2 as httpx
import pytest
import redis

from tests.gateway.scripted import Answer, ScriptedUpstream, scripted_upstream
from tests.support.gateway import (
    BASE_PREFIX,
    REDIS_URL,
    Key,
    Process,
    World,
    clear_prefix,
    free_port,
    start_gateway,
    stop,
)

REDIS_PORT = urlsplit(REDIS_URL).port or 6379
AGENT_PORT = free_port()  # stands for the local agent's control API, listed as a platform service
LOOPBACK = {"allowed_networks": ["127.0.0.0/8"], "platform_services": [["127.0.0.1", REDIS_PORT]]}


@pytest.fixture(scope="module")
def ext_world(redis_client: redis.Redis) -> Iterator[World]:
    world = World(redis_client, f"{BASE_PREFIX}-ext-{uuid.uuid4().hex[:6]}")
    world.network = {**LOOPBACK, "platform_services": [["127.0.0.1", REDIS_PORT], ["127.0.0.1", AGENT_PORT]]}
    world.publish()
    yield world
    clear_prefix(redis_client, world.prefix)


@pytest.fixture(scope="module")
def ext_gateway(session_tmp: Path, ext_world: World) -> Iterator[Process]:
    proc = start_gateway(session_tmp, ext_world.prefix)
    yield proc
    stop(proc.proc)


@pytest.fixture
def recorder() -> Iterator[ScriptedUpstream]:
    with scripted_upstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def agent() -> Iterator[ScriptedUpstream]:
    with scripted_upstream(port=AGENT_PORT) as upstream:
        yield upstream


def external(world: World, gateway: Process, endpoint: str, name: str = "ext") -> Key:
    """A tenant with one external deployment ``name`` at ``endpoint``, published; its key."""
    tenant = world.tenant()
    world.deployment(tenant, name, [endpoint], runtime="external")
    key = world.key(tenant)
    world.publish(gateway)
    return key


def chat(gateway: Process, key: Key, model: str = "ext") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 3}
    return httpx.post(
        gateway.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key.full}"}, timeout=15
    )


def assert_unreachable(response: httpx.Response, name: str = "ext") -> None:
    assert response.status_code == 502, response.text
    assert response.json() == {
        "error": {
            "message": f"The endpoint of '{name}' could not be reached.",
            "type": "upstream_error",
            "param": None,
            "code": "upstream_unavailable",
        }
    }
    assert "retry-after" not in response.headers


def test_it_refuses_an_external_endpoint_on_the_platforms_redis(ext_world: World, ext_gateway: Process) -> None:
    key = external(ext_world, ext_gateway, f"http://127.0.0.1:{REDIS_PORT}")
    assert_unreachable(chat(ext_gateway, key))
    assert f"127.0.0.1:{REDIS_PORT} is one of the platform's own services" in ext_gateway.log()


def test_it_refuses_an_external_endpoint_on_the_local_agents_api(
    ext_world: World, ext_gateway: Process, agent: ScriptedUpstream
) -> None:
    key = external(ext_world, ext_gateway, agent.url)
    assert_unreachable(chat(ext_gateway, key))
    assert agent.connections == 0


def test_it_refuses_an_external_endpoint_on_another_deployments_replica(
    ext_world: World, ext_gateway: Process, recorder: ScriptedUpstream
) -> None:
    other = ext_world.tenant()
    ext_world.deployment(other, "theirs", [recorder.url])  # a replica the platform runs for another tenant
    key = external(ext_world, ext_gateway, recorder.url)
    assert_unreachable(chat(ext_gateway, key))
    assert recorder.connections == 0
    ext_world.deployments.pop(f"{other}/theirs")


def test_it_refuses_an_external_endpoint_on_the_gateway_itself(ext_world: World, ext_gateway: Process) -> None:
    key = external(ext_world, ext_gateway, ext_gateway.url)  # not listed in the snapshot: the gateway knows its own
    assert_unreachable(chat(ext_gateway, key))
    port = urlsplit(ext_gateway.url).port
    assert f"127.0.0.1:{port} is one of the platform's own services" in ext_gateway.log()


def test_it_reaches_a_loopback_endpoint_only_once_the_operator_allows_its_network(
    ext_world: World, ext_gateway: Process, recorder: ScriptedUpstream
) -> None:
    ext_world.network = None  # a snapshot without a network section: public addresses only
    try:
        key = external(ext_world, ext_gateway, recorder.url)
        assert_unreachable(chat(ext_gateway, key))
        assert recorder.connections == 0
    finally:
        ext_world.network = LOOPBACK
    ext_world.publish(ext_gateway)
    response = chat(ext_gateway, key)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "ext"
    [received] = recorder.received
    assert received.path == "/v1/chat/completions"
    assert received.headers["host"] == f"127.0.0.1:{recorder.port}"


def test_it_checks_the_addresses_a_name_resolves_to(
    ext_world: World, ext_gateway: Process, recorder: ScriptedUpstream
) -> None:
    ext_world.network = {**LOOPBACK, "allowed_networks": []}
    try:
        key = external(ext_world, ext_gateway, f"http://localhost:{recorder.port}")  # /etc/hosts: 127.0.0.1
        assert_unreachable(chat(ext_gateway, key))
        assert recorder.connections == 0
        assert "'localhost' resolves to 127.0.0.1, and 127.0.0.1 is not a public address" in ext_gateway.log()
    finally:
        ext_world.network = LOOPBACK
    ext_world.publish(ext_gateway)
    response = chat(ext_gateway, key)
    assert response.status_code == 200, response.text
    assert recorder.received[-1].headers["host"] == f"localhost:{recorder.port}"


def test_it_keeps_the_base_path_of_an_external_endpoint(
    ext_world: World, ext_gateway: Process, recorder: ScriptedUpstream
) -> None:
    key = external(ext_world, ext_gateway, recorder.url + "/openai")
    assert chat(ext_gateway, key).status_code == 200
    assert recorder.received[-1].path == "/openai/v1/chat/completions"


def test_it_answers_every_failure_of_an_external_endpoint_alike(
    ext_world: World, ext_gateway: Process, recorder: ScriptedUpstream
) -> None:
    tenant = ext_world.tenant()
    key = ext_world.key(tenant)
    scripted = [
        Answer(404, b"<html>not found</html>", "text/html"),
        Answer(500, b'{"error": {"message": "boom"}}'),
        Answer(302, b"", headers={"location": "http://127.0.0.1:1/"}),
        Answer(401, b'{"error": {"message": "bad upstream key"}}'),
    ]
    endpoints = [
        f"http://127.0.0.1:{REDIS_PORT}",  # refused by the policy
        f"http://127.0.0.1:{free_port()}",  # nobody listens
        *([recorder.url] * len(scripted)),  # answers that are not OpenAI's
    ]
    answers = iter(scripted)
    recorder.script = lambda path, body: next(answers)
    seen = []
    for endpoint in endpoints:
        ext_world.deployment(tenant, "ext", [endpoint], runtime="external")
        ext_world.publish(ext_gateway)
        response = chat(ext_gateway, key)
        assert_unreachable(response)
        seen.append((response.status_code, response.content))
    assert len(set(seen)) == 1
    assert len(recorder.received) == len(scripted)  # the redirect was not followed


def test_it_refuses_an_external_embeddings_endpoint_alike(ext_world: World, ext_gateway: Process) -> None:
    key = external(ext_world, ext_gateway, f"http://127.0.0.1:{REDIS_PORT}", name="ext-embed")
    response = httpx.post(
        ext_gateway.url + "/v1/embeddings",
        json={"model": "ext-embed", "input": "hello"},
        headers={"authorization": f"Bearer {key.full}"},
        timeout=15,
    )
    assert_unreachable(response, "ext-embed")
