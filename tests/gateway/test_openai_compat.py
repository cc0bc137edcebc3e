"""The gateway through the official ``openai`` client: chat, streams, completions, embeddings, model list."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import openai
import pytest
import redis

from tests.support.gateway import Key, Process, World, usage_events


@pytest.fixture(scope="module")
def acme(world: World, gateway: Process, upstream: Process) -> Key:
    tenant = world.tenant()
    world.deployment(tenant, "chat-small", [upstream.url])
    world.deployment(tenant, "embed-small", [upstream.url], model="frontdoor/sim-embed")
    key = world.key(tenant)
    world.publish(gateway)
    return key


def client_for(gateway: Process, key: Key) -> openai.OpenAI:
    return openai.OpenAI(api_key=key.full, base_url=gateway.url + "/v1", max_retries=0, timeout=10)


def events_for(client: redis.Redis, prefix: str, key: Key, count: int) -> list[dict[str, str]]:
    """Usage events are written after the response; wait (bounded) until ``count`` are there."""
    for _ in range(200):
        events = usage_events(client, prefix, key)
        if len(events) >= count:
            return events
        time.sleep(0.01)
    return usage_events(client, prefix, key)


def test_it_answers_a_chat_completion_under_the_clients_model_name(gateway: Process, acme: Key) -> None:
    reply = client_for(gateway, acme).chat.completions.create(
        model="chat-small", messages=[{"role": "user", "content": "hello there"}], max_tokens=5
    )
    assert reply.model == "chat-small"
    assert reply.choices[0].message.content
    assert reply.usage is not None
    assert reply.usage.completion_tokens <= 5


def test_it_streams_without_the_usage_chunk_when_not_asked(gateway: Process, acme: Key) -> None:
    chunks = list(
        client_for(gateway, acme).chat.completions.create(
            model="chat-small", messages=[{"role": "user", "content": "tell me"}], max_tokens=8, stream=True
        )
    )
    assert chunks
    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.model == "chat-small" for chunk in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text


def test_it_streams_the_usage_chunk_when_asked(gateway: Process, acme: Key) -> None:
    chunks = list(
        client_for(gateway, acme).chat.completions.create(
            model="chat-small",
            messages=[{"role": "user", "content": "tell me more"}],
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert last.usage.completion_tokens == len(content_chunks)


def test_it_answers_text_completions(gateway: Process, acme: Key) -> None:
    reply = client_for(gateway, acme).completions.create(model="chat-small", prompt="once upon a time", max_tokens=4)
    assert reply.model == "chat-small"
    assert reply.choices[0].text
    assert reply.usage is not None and reply.usage.prompt_tokens == 4


def test_it_answers_embeddings(gateway: Process, acme: Key) -> None:
    reply = client_for(gateway, acme).embeddings.create(model="embed-small", input=["a cat", "a dog", "a bird"])
    assert reply.model == "embed-small"
    assert [d.index for d in reply.data] == [0, 1, 2]
    assert len(reply.data[0].embedding) > 0


def test_it_lists_only_the_tenants_deployments(gateway: Process, acme: Key, world: World, upstream: Process) -> None:
    other = world.tenant()
    world.deployment(other, "not-yours", [upstream.url])
    world.publish(gateway)
    models = client_for(gateway, acme).models.list()
    assert sorted(m.id for m in models.data) == ["chat-small", "embed-small"]
    assert all(m.owned_by == acme.tenant for m in models.data)


def test_it_writes_one_usage_event_per_request_with_the_tokens(
    gateway: Process, world: World, upstream: Process, redis_client: redis.Redis, prefix: str
) -> None:
    tenant = world.tenant()
    dep = world.deployment(tenant, "metered", [upstream.url])
    key = world.key(tenant)
    world.publish(gateway)
    client = client_for(gateway, key)
    reply = client.chat.completions.create(model="metered", messages=[{"role": "user", "content": "one two three"}])
    list(
        client.chat.completions.create(
            model="metered", messages=[{"role": "user", "content": "four five"}], max_tokens=6, stream=True
        )
    )
    events = events_for(redis_client, prefix, key, 2)
    assert len(events) == 2
    whole, streamed = events
    assert reply.usage is not None
    assert int(whole["prompt_tokens"]) == reply.usage.prompt_tokens
    assert int(whole["completion_tokens"]) == reply.usage.completion_tokens
    assert whole["status"] == "200"
    assert whole["deployment"] == str(dep["id"])
    assert whole["revision"] == str(dep["revisions"][0]["id"])
    assert whole["tenant"] == str(world.tenants[tenant]["id"])
    assert whole["ttft_ms"] == ""
    assert int(streamed["prompt_tokens"]) == 2
    assert 1 <= int(streamed["completion_tokens"]) <= 6
    assert streamed["ttft_ms"] != ""


def test_it_gives_each_concurrent_embeddings_request_its_own_vectors(gateway: Process, acme: Key) -> None:
    client = client_for(gateway, acme)
    texts = [[f"text {i} a", f"text {i} b"] for i in range(16)]
    alone = {t: client.embeddings.create(model="embed-small", input=t).data[0].embedding for t in ("text 3 b",)}
    with ThreadPoolExecutor(16) as pool:  # concurrent: the gateway merges them into shared upstream calls
        replies = list(pool.map(lambda inputs: client.embeddings.create(model="embed-small", input=inputs), texts))
    for reply in replies:
        assert [d.index for d in reply.data] == [0, 1]
        assert reply.usage.prompt_tokens > 0
    assert replies[3].data[1].embedding == alone["text 3 b"]


def test_it_sends_each_revision_the_model_its_replicas_serve(
    world: World, gateway: Process, upstream: Process
) -> None:
    tenant = world.tenant()
    revisions = [
        {"id": 9101, "name": "r1", "weight": 50, "model": "acme/stable-model", "endpoints": [upstream.url]},
        {"id": 9102, "name": "r2", "weight": 50, "model": "acme/canary-model", "endpoints": [upstream.url]},
    ]
    world.deployment(tenant, "two-models", revisions=revisions)
    key = world.key(tenant)
    world.publish(gateway)
    client = client_for(gateway, key)

    replies = [
        client.chat.completions.create(model="two-models", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        for _ in range(40)
    ]
    streamed = list(
        client.chat.completions.create(
            model="two-models", messages=[{"role": "user", "content": "hi"}], max_tokens=2, stream=True
        )
    )

    metrics = httpx.get(upstream.url + "/metrics", timeout=5).text
    assert 'modelserver_requests_by_model_total{model="acme/stable-model"}' in metrics
    assert 'modelserver_requests_by_model_total{model="acme/canary-model"}' in metrics
    # Whichever revision answered, the client sees the deployment's name, never an upstream model id.
    assert {reply.model for reply in replies} == {"two-models"}
    assert {chunk.model for chunk in streamed} == {"two-models"}
