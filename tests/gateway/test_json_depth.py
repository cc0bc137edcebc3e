"""Bodies nested deeper than MAX_JSON_DEPTH are a 400 before admission, wherever the nesting is.

Nothing about such a request reaches the limiter or the usage stream, and nothing recurses on it: the gateway's log
stays free of tracebacks (a RecursionError used to print thousands of lines per request).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import redis

from controlplane.contracts.jsonlimits import MAX_JSON_DEPTH
from controlplane.contracts.redis_names import api_key_scope, request_window_key, tenant_scope
from gateway.config import GatewayConfig
from gateway.errors import GatewayError
from gateway.validation import CHAT, COMPLETIONS, EMBEDDINGS, parse_request
from tests.gateway.scripted import Answer, scripted_upstream
from tests.support.gateway import BASE_PREFIX, Key, Process, World, clear_prefix, start_gateway, stop, usage_events

DEPTHS = [65, 300, 600, 5000]


def nested(depth: int, opener: str = "[") -> str:
    """A JSON value ``depth`` levels deep, written by hand: orjson will not encode past 254 levels."""
    if opener == "[":
        return "[" * depth + '"x"' + "]" * depth
    return '{"a":' * depth + '"x"' + "}" * depth


def bodies(depth: int) -> dict[str, tuple[str, bytes]]:
    """Where the nesting sits -> (route, raw body)."""
    deep, deep_object = nested(depth), nested(depth, "{")
    return {
        "messages content": (
            "/v1/chat/completions",
            f'{{"model":"chat","messages":[{{"role":"user","content":{deep}}}]}}'.encode(),
        ),
        "tools": (
            "/v1/chat/completions",
            (
                '{"model":"chat","messages":[{"role":"user","content":"hi"}],'
                f'"tools":[{{"type":"function","function":{{"name":"f","parameters":{deep_object}}}}}]}}'
            ).encode(),
        ),
        "top level": (
            "/v1/chat/completions",
            f'{{"model":"chat","messages":[{{"role":"user","content":"hi"}}],"metadata":{deep_object}}}'.encode(),
        ),
        "completions prompt": ("/v1/completions", f'{{"model":"chat","prompt":{deep}}}'.encode()),
        "embeddings input": ("/v1/embeddings", f'{{"model":"chat","input":{deep}}}'.encode()),
    }


KIND = {"/v1/chat/completions": CHAT, "/v1/completions": COMPLETIONS, "/v1/embeddings": EMBEDDINGS}
CASES = [(depth, where) for depth in DEPTHS for where in bodies(depth)]


@pytest.mark.parametrize(("depth", "where"), CASES)
def test_parse_request_refuses_deep_nesting(depth: int, where: str) -> None:
    path, raw = bodies(depth)[where]
    with pytest.raises(GatewayError) as caught:
        parse_request(KIND[path], raw, GatewayConfig())
    assert (caught.value.status, caught.value.code, caught.value.param) == (400, "nesting_too_deep", None)


def test_it_accepts_a_body_nested_exactly_to_the_limit() -> None:
    # The body object, "messages", the message and "content" take 4 levels; the content list holds the rest.
    content = nested(MAX_JSON_DEPTH - 3)
    raw = f'{{"model":"chat","messages":[{{"role":"user","content":{content}}}]}}'.encode()
    assert parse_request(CHAT, raw, GatewayConfig()).model == "chat"
    deeper = f'{{"model":"chat","messages":[{{"role":"user","content":[{content}]}}]}}'.encode()
    with pytest.raises(GatewayError):
        parse_request(CHAT, deeper, GatewayConfig())


@pytest.fixture(scope="module")
def depth_world(redis_client: redis.Redis) -> Iterator[World]:
    world = World(redis_client, f"{BASE_PREFIX}-depth-{uuid.uuid4().hex[:6]}")
    world.publish()
    yield world
    clear_prefix(redis_client, world.prefix)


@pytest.fixture(scope="module")
def depth_gateway(session_tmp: Path, depth_world: World) -> Iterator[Process]:
    """A gateway of its own, so that its log holds only what these requests caused."""
    proc = start_gateway(session_tmp, depth_world.prefix, FRONTDOOR_GATEWAY_ACCESS_LOG="false")
    yield proc
    stop(proc.proc)


@pytest.fixture(scope="module")
def limited_key(depth_world: World, depth_gateway: Process, upstream: Process) -> Key:
    tenant = depth_world.tenant(requests_per_minute=10_000, tokens_per_minute=10_000_000)
    depth_world.deployment(tenant, "chat", [upstream.url])
    key = depth_world.key(tenant, requests_per_minute=10_000)
    depth_world.publish(depth_gateway)
    return key


@pytest.mark.parametrize(("depth", "where"), CASES)
def test_it_refuses_deep_nesting_with_a_400_before_admission(
    depth_world: World,
    depth_gateway: Process,
    limited_key: Key,
    redis_client: redis.Redis,
    depth: int,
    where: str,
) -> None:
    path, raw = bodies(depth)[where]
    response = httpx.post(
        depth_gateway.url + path,
        content=raw,
        headers={"authorization": f"Bearer {limited_key.full}", "content-type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "nesting_too_deep", None)
    prefix = depth_world.prefix
    assert not redis_client.exists(request_window_key(prefix, api_key_scope(limited_key.key_id)))
    assert not redis_client.exists(request_window_key(prefix, tenant_scope(limited_key.tenant)))
    assert usage_events(redis_client, prefix, limited_key) == []
    log = depth_gateway.log()
    assert "Traceback" not in log and "RecursionError" not in log


def test_the_limiter_still_counts_a_plain_request_of_the_same_key(
    depth_world: World, depth_gateway: Process, limited_key: Key, redis_client: redis.Redis
) -> None:
    """The counters checked above are the ones an admitted request writes."""
    response = httpx.post(
        depth_gateway.url + "/v1/chat/completions",
        json={"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        headers={"authorization": f"Bearer {limited_key.full}"},
        timeout=10,
    )
    assert response.status_code == 200
    assert redis_client.zcard(request_window_key(depth_world.prefix, api_key_scope(limited_key.key_id))) == 1


def test_an_upstream_answer_nested_past_what_can_be_encoded_is_a_502_without_a_traceback(
    depth_world: World, depth_gateway: Process, redis_client: redis.Redis
) -> None:
    with scripted_upstream() as replica:
        embeddings = '{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5]}],'
        replica.script = lambda path, body: Answer(200, f'{embeddings}"extra":{nested(300)}}}'.encode())
        tenant = depth_world.tenant()
        depth_world.deployment(tenant, "embed", [replica.url], model="frontdoor/sim-embed")
        key = depth_world.key(tenant)
        depth_world.publish(depth_gateway)
        response = httpx.post(
            depth_gateway.url + "/v1/embeddings",
            json={"model": "embed", "input": "hello"},
            headers={"authorization": f"Bearer {key.full}"},
            timeout=10,
        )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    log = depth_gateway.log()
    assert "Traceback" not in log and "RecursionError" not in log


def test_usage_nested_a_thousand_levels_deep_is_logged_without_a_traceback(
    depth_world: World, depth_gateway: Process, redis_client: redis.Redis
) -> None:
    with scripted_upstream() as replica:
        answer = '{"id":"c","object":"chat.completion","choices":[],"usage":' + nested(1020) + "}"
        replica.script = lambda path, body: Answer(200, answer.encode())
        tenant = depth_world.tenant()
        depth_world.deployment(tenant, "chat", [replica.url])
        key = depth_world.key(tenant)
        depth_world.publish(depth_gateway)
        body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        response = httpx.post(
            depth_gateway.url + "/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {key.full}"},
            timeout=10,
        )
        assert response.status_code == 200
        for _ in range(300):  # the warning is written when the request is metered, after the answer
            if usage_events(redis_client, depth_world.prefix, key):
                break
            time.sleep(0.01)
    log = depth_gateway.log()
    assert "unusable usage" in log
    assert "Traceback" not in log and "Logging error" not in log
