"""What an upstream answers cannot break the gateway: lying usage, redirects, client errors on embeddings.

An upstream's ``usage`` is believed only when its counts are non-negative integers within a bound; anything else
("abc", 1e30, -5, true) still answers the client 200, settles the limiter (a key allowed one request at a time
can make the next one) and meters the reservation. A redirect is a 502, never followed; an embeddings client error
in OpenAI's shape reaches the client as that status.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
import pytest
import redis

from gateway.batching import EmbeddingsBatcher
from gateway.config import GatewayConfig
from gateway.validation import CHAT, EMBEDDINGS, parse_request
from tests.gateway.scripted import Answer, ScriptedUpstream, scripted_upstream
from tests.support.gateway import (
    BASE_PREFIX,
    Key,
    Process,
    World,
    clear_prefix,
    start_gateway,
    stop,
    usage_events,
)

HOSTILE = {
    "a string": "abc",
    "a huge float": 1e30,
    "a negative count": -5,
    "a boolean": True,
    "an integer above the bound": 10**12,
}
CHAT_BODY: dict[str, Any] = {"model": "liar", "messages": [{"role": "user", "content": "count me"}], "max_tokens": 7}
EMBED_BODY: dict[str, Any] = {"model": "liar-embed", "input": ["some words to embed"]}


@pytest.fixture(scope="module")
def answers_world(redis_client: redis.Redis) -> Iterator[World]:
    world = World(redis_client, f"{BASE_PREFIX}-ans-{uuid.uuid4().hex[:6]}")
    world.network = {"allowed_networks": ["127.0.0.0/8"], "platform_services": []}
    world.publish()
    yield world
    clear_prefix(redis_client, world.prefix)


@pytest.fixture(scope="module")
def answers_gateway(session_tmp: Path, answers_world: World) -> Iterator[Process]:
    proc = start_gateway(session_tmp, answers_world.prefix)
    yield proc
    stop(proc.proc)


@pytest.fixture(scope="module")
def liar() -> Iterator[ScriptedUpstream]:
    """A tenant's external endpoint that says whatever the test makes it say."""
    with scripted_upstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def replica() -> Iterator[ScriptedUpstream]:
    """A replica the platform publishes (runtime builtin) that answers what the test makes it answer."""
    with scripted_upstream() as upstream:
        yield upstream


def one_at_a_time(world: World, gateway: Process, endpoint: str, runtime: str = "external") -> Key:
    """A tenant whose key may have one request in flight, with deployments "liar" and "liar-embed" at ``endpoint``."""
    tenant = world.tenant()
    world.deployment(tenant, "liar", [endpoint], runtime=runtime)
    world.deployment(tenant, "liar-embed", [endpoint], model="frontdoor/sim-embed", runtime=runtime)
    key = world.key(tenant, max_concurrent_requests=1)
    world.publish(gateway)
    return key


def post(gateway: Process, key: Key, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(gateway.url + path, json=body, headers={"authorization": f"Bearer {key.full}"}, timeout=15)


def reservation(kind: str, body: dict[str, Any]) -> int:
    parsed = parse_request(kind, orjson.dumps(body), GatewayConfig())
    return parsed.prompt_estimate + parsed.max_tokens


def metered(client: redis.Redis, world: World, key: Key, count: int = 1) -> list[int]:
    """Tokens (prompt + completion) of the key's usage events, once ``count`` of them were written (bounded wait)."""
    for _ in range(300):
        events = usage_events(client, world.prefix, key)
        if len(events) >= count:
            return [int(e["prompt_tokens"]) + int(e["completion_tokens"]) for e in events]
        time.sleep(0.01)
    raise AssertionError(f"fewer than {count} usage events for {key.key_id}")


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_it_charges_the_reservation_when_a_whole_answer_lies_about_usage(
    answers_world: World, answers_gateway: Process, liar: ScriptedUpstream, redis_client: redis.Redis, value: Any
) -> None:
    key = one_at_a_time(answers_world, answers_gateway, liar.url)
    liar.answer_with_usage({"prompt_tokens": value, "completion_tokens": 2, "total_tokens": 9})

    response = post(answers_gateway, key, "/v1/chat/completions", CHAT_BODY)

    assert response.status_code == 200, response.text
    assert metered(redis_client, answers_world, key) == [reservation(CHAT, CHAT_BODY)]
    liar.answer_with_usage(None)
    assert post(answers_gateway, key, "/v1/chat/completions", CHAT_BODY).status_code == 200  # the lease was freed


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_it_charges_the_reservation_when_a_stream_lies_about_usage(
    answers_world: World, answers_gateway: Process, liar: ScriptedUpstream, redis_client: redis.Redis, value: Any
) -> None:
    key = one_at_a_time(answers_world, answers_gateway, liar.url)
    liar.answer_with_usage({"prompt_tokens": 3, "completion_tokens": value})

    streamed = {**CHAT_BODY, "stream": True}
    response = post(answers_gateway, key, "/v1/chat/completions", streamed)

    assert response.status_code == 200
    assert response.text.endswith("data: [DONE]\n\n")
    assert metered(redis_client, answers_world, key) == [reservation(CHAT, streamed)]
    liar.answer_with_usage(None)
    assert post(answers_gateway, key, "/v1/chat/completions", CHAT_BODY).status_code == 200


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_it_charges_the_reservation_when_embeddings_lie_about_usage(
    answers_world: World, answers_gateway: Process, liar: ScriptedUpstream, redis_client: redis.Redis, value: Any
) -> None:
    key = one_at_a_time(answers_world, answers_gateway, liar.url)
    liar.answer_with_usage({"prompt_tokens": value, "total_tokens": value})

    response = post(answers_gateway, key, "/v1/embeddings", EMBED_BODY)

    assert response.status_code == 200, response.text
    assert response.json()["model"] == "liar-embed"
    assert metered(redis_client, answers_world, key) == [reservation(EMBEDDINGS, EMBED_BODY)]
    liar.answer_with_usage(None)
    assert post(answers_gateway, key, "/v1/embeddings", EMBED_BODY).status_code == 200


def test_it_flags_the_requests_whose_usage_it_could_not_believe(
    answers_world: World, answers_gateway: Process, liar: ScriptedUpstream, redis_client: redis.Redis
) -> None:
    key = one_at_a_time(answers_world, answers_gateway, liar.url)
    liar.answer_with_usage("lots")
    assert post(answers_gateway, key, "/v1/chat/completions", CHAT_BODY).status_code == 200
    metered(redis_client, answers_world, key)
    metrics = httpx.get(answers_gateway.metrics_url + "/metrics", timeout=5).text
    assert f'frontdoor_gateway_upstream_errors_total{{tenant="{key.tenant}",deployment="liar",kind="bad_usage"}} 1' in (
        metrics
    )
    assert "sent unusable usage 'lots'" in answers_gateway.log()


def test_it_meters_honest_usage_as_sent(
    answers_world: World, answers_gateway: Process, liar: ScriptedUpstream, redis_client: redis.Redis
) -> None:
    key = one_at_a_time(answers_world, answers_gateway, liar.url)
    liar.answer_with_usage({"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10})
    assert post(answers_gateway, key, "/v1/chat/completions", CHAT_BODY).status_code == 200
    assert metered(redis_client, answers_world, key) == [10]


def test_it_answers_502_when_a_replica_redirects(
    answers_world: World, answers_gateway: Process, replica: ScriptedUpstream
) -> None:
    key = one_at_a_time(answers_world, answers_gateway, replica.url, runtime="builtin")
    replica.script = lambda path, body: Answer(302, b"", headers={"location": replica.url + "/elsewhere"})
    before = len(replica.received)

    chat = post(answers_gateway, key, "/v1/chat/completions", CHAT_BODY)
    embed = post(answers_gateway, key, "/v1/embeddings", EMBED_BODY)

    assert (chat.status_code, chat.json()["error"]["code"]) == (502, "upstream_error")
    assert (embed.status_code, embed.json()["error"]["code"]) == (502, "upstream_error")
    assert len(replica.received) == before + 2  # neither redirect was followed


@pytest.mark.parametrize("runtime", ["builtin", "external"])
def test_it_passes_an_embeddings_client_error_through(
    answers_world: World,
    answers_gateway: Process,
    liar: ScriptedUpstream,
    replica: ScriptedUpstream,
    runtime: str,
) -> None:
    upstream = replica if runtime == "builtin" else liar
    key = one_at_a_time(answers_world, answers_gateway, upstream.url, runtime=runtime)
    error = {
        "error": {
            "message": "This model's maximum context length is 512 tokens (model frontdoor/sim-embed).",
            "type": "invalid_request_error",
            "param": "input",
            "code": "context_length_exceeded",
        }
    }
    upstream.script = lambda path, body: Answer(400, orjson.dumps(error))

    response = post(answers_gateway, key, "/v1/embeddings", EMBED_BODY)

    assert response.status_code == 400
    assert response.json() == error
    upstream.script = lambda path, body: Answer(404, b"<html>no</html>", "text/html")
    assert post(answers_gateway, key, "/v1/embeddings", EMBED_BODY).status_code == 502


def test_it_sends_each_request_of_a_rejected_batch_on_its_own() -> None:
    class Rejected(Exception):
        pass

    sent: list[list[str]] = []

    async def send(batch_key: str, body: dict[str, Any]) -> dict[str, Any]:
        inputs = list(body["input"])
        sent.append(inputs)
        if "bad" in inputs:
            raise Rejected("input too long")
        return {"data": [{"index": i, "embedding": [0.0]} for i in range(len(inputs))], "usage": {}}

    async def scenario() -> list[Any]:
        batcher = EmbeddingsBatcher(send, window_s=0.05, retry_alone=(Rejected,))
        good = batcher.submit("k", {"model": "m", "input": ["fine"]})
        bad = batcher.submit("k", {"model": "m", "input": ["bad"]})
        return await asyncio.gather(good, bad, return_exceptions=True)

    good, bad = asyncio.run(scenario())
    assert sent == [["fine", "bad"], ["fine"], ["bad"]]
    assert isinstance(good, dict) and len(good["data"]) == 1
    assert isinstance(bad, Rejected)
