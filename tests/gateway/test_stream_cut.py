"""A stream that loses its upstream before [DONE] ends with an error event, never as a whole answer.

The HTTP status already sent stays 200; the stream's last event is OpenAI's error shape (code
``upstream_disconnected``, or ``timeout`` when the deployment's timeout passes mid-stream), no ``[DONE]`` follows,
the official ``openai`` client raises ``APIError`` on it, the usage event carries an error status and the load
figures count the request as an error (the SLO's error rate).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import orjson
import pytest
import redis

from tests.gateway.scripted import Answer, scripted_upstream
from tests.support.gateway import Key, Process, World, start_modelserver, stop, usage_events

CHAT = "/v1/chat/completions"
LONG_CHAT = {"model": "chat", "messages": [{"role": "user", "content": "write a long story"}], "max_tokens": 400}


@pytest.fixture(scope="module")
def cutting_upstream(session_tmp: Path) -> Iterator[Process]:
    """Streams stop after 4 chunks without [DONE] and the connection closes: a replica dying mid-answer."""
    proc = start_modelserver(session_tmp, "--truncate-after", "4")
    yield proc
    stop(proc.proc)


@pytest.fixture(scope="module")
def paced_upstream(session_tmp: Path) -> Iterator[Process]:
    proc = start_modelserver(session_tmp, "--tokens-per-s", "20")
    yield proc
    stop(proc.proc)


def tenant_with(world: World, gateway: Process, endpoint: str, timeout_s: float = 30) -> tuple[Key, dict[str, Any]]:
    tenant = world.tenant()
    deployment = world.deployment(tenant, "chat", [endpoint], timeout_s=timeout_s)
    key = world.key(tenant)
    world.publish(gateway)
    return key, deployment


def stream_events(gateway: Process, key: Key, path: str = CHAT, body: dict[str, Any] | None = None) -> list[str]:
    """The ``data:`` payloads of one streamed request, read to the end of the response."""
    with httpx.stream(
        "POST",
        gateway.url + path,
        json={**(body or LONG_CHAT), "stream": True},
        headers={"authorization": f"Bearer {key.full}"},
        timeout=15,
    ) as response:
        assert response.status_code == 200
        return [line[6:] for line in response.iter_lines() if line.startswith("data: ")]


def one_event(client: redis.Redis, prefix: str, key: Key) -> dict[str, str]:
    for _ in range(300):
        events = usage_events(client, prefix, key)
        if events:
            break
        time.sleep(0.01)
    [event] = events
    return event


def load_errors(client: redis.Redis, prefix: str, deployment: dict[str, Any]) -> int:
    """Errors in the per-second load figures of the deployment's revision, once the 1 s flush wrote them."""
    revision = deployment["revisions"][0]["id"]
    for _ in range(100):
        keys = list(client.scan_iter(match=f"{prefix}:load:{deployment['id']}:{revision}:*"))
        errors = sum(int(client.hget(k, "errors") or 0) for k in keys)
        if errors:
            return errors
        time.sleep(0.05)
    return 0


def assert_ends_with_error(payloads: list[str], code: str) -> None:
    assert payloads, "the stream sent nothing"
    assert "[DONE]" not in payloads
    last = orjson.loads(payloads[-1])
    assert set(last) == {"error"}
    error = last["error"]
    message = error.pop("message")
    assert isinstance(message, str) and message
    assert error == {"type": "server_error", "code": code, "param": None}
    assert all("error" not in orjson.loads(p) for p in payloads[:-1])


def content_chunks(payloads: list[str]) -> int:
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    return sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content"))


def test_a_stream_cut_by_the_upstream_ends_with_an_error_event_and_is_metered_as_an_error(
    world: World, gateway: Process, cutting_upstream: Process, redis_client: redis.Redis, prefix: str
) -> None:
    key, deployment = tenant_with(world, gateway, cutting_upstream.url)
    payloads = stream_events(gateway, key)
    assert_ends_with_error(payloads, "upstream_disconnected")
    event = one_event(redis_client, prefix, key)
    assert event["status"] == "502"
    assert int(event["completion_tokens"]) == content_chunks(payloads)
    assert load_errors(redis_client, prefix, deployment) == 1


@pytest.mark.parametrize("kind", ["chat", "completions"])
def test_the_openai_client_raises_on_a_stream_cut_by_the_upstream(
    world: World, gateway: Process, cutting_upstream: Process, kind: str
) -> None:
    key, _ = tenant_with(world, gateway, cutting_upstream.url)
    client = openai.OpenAI(api_key=key.full, base_url=gateway.url + "/v1", max_retries=0, timeout=15)
    received = []
    with pytest.raises(openai.APIError) as caught:
        if kind == "chat":
            stream: Any = client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "go on"}], max_tokens=50, stream=True
            )
        else:
            stream = client.completions.create(model="chat", prompt="go on", max_tokens=50, stream=True)
        for chunk in stream:
            received.append(chunk)
    assert received  # the chunks before the cut were relayed
    assert caught.value.body == {
        "message": caught.value.message,
        "type": "server_error",
        "code": "upstream_disconnected",
        "param": None,
    }


def test_a_replica_killed_mid_stream_ends_the_stream_with_an_error_event(
    world: World, gateway: Process, session_tmp: Path, redis_client: redis.Redis, prefix: str
) -> None:
    doomed = start_modelserver(session_tmp, "--tokens-per-s", "20")
    try:
        key, deployment = tenant_with(world, gateway, doomed.url)
        client = openai.OpenAI(api_key=key.full, base_url=gateway.url + "/v1", max_retries=0, timeout=15)
        received = 0
        with pytest.raises(openai.APIError) as caught:
            for chunk in client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "a long story"}], max_tokens=400, stream=True
            ):
                if chunk.choices and chunk.choices[0].delta.content:
                    received += 1
                    if received == 3:
                        doomed.proc.send_signal(signal.SIGKILL)
    finally:
        stop(doomed.proc)
    assert received >= 3
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "upstream_disconnected"
    event = one_event(redis_client, prefix, key)
    assert event["status"] == "502"
    assert received <= int(event["completion_tokens"]) < 400
    assert load_errors(redis_client, prefix, deployment) == 1


def test_a_stream_past_the_deployment_timeout_ends_with_a_timeout_event(
    world: World, gateway: Process, paced_upstream: Process, redis_client: redis.Redis, prefix: str
) -> None:
    key, deployment = tenant_with(world, gateway, paced_upstream.url, timeout_s=1)
    payloads = stream_events(gateway, key)  # 400 tokens at 20/s: far longer than the timeout
    assert_ends_with_error(payloads, "timeout")
    assert content_chunks(payloads) >= 1
    assert one_event(redis_client, prefix, key)["status"] == "504"
    assert load_errors(redis_client, prefix, deployment) == 1


def sse(*events: str) -> bytes:
    return "".join(f"data: {e}\n\n" for e in events).encode()


CHUNK = orjson.dumps(
    {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
).decode()


def test_a_stream_whose_body_ends_cleanly_without_done_still_ends_with_an_error_event(
    world: World, gateway: Process, redis_client: redis.Redis, prefix: str
) -> None:
    with scripted_upstream() as replica:
        replica.script = lambda path, body: Answer(200, sse(CHUNK, CHUNK), "text/event-stream")
        key, _ = tenant_with(world, gateway, replica.url)
        payloads = stream_events(gateway, key)
    assert_ends_with_error(payloads, "upstream_disconnected")
    assert content_chunks(payloads) == 2
    assert one_event(redis_client, prefix, key)["status"] == "502"


def test_a_last_event_without_its_blank_line_still_counts_as_the_end(
    world: World, gateway: Process, redis_client: redis.Redis, prefix: str
) -> None:
    with scripted_upstream() as replica:
        replica.script = lambda path, body: Answer(200, sse(CHUNK) + b"data: [DONE]", "text/event-stream")
        key, _ = tenant_with(world, gateway, replica.url)
        payloads = stream_events(gateway, key)
    assert payloads[-1] == "[DONE]"
    assert all("error" not in orjson.loads(p) for p in payloads[:-1])
    assert one_event(redis_client, prefix, key)["status"] == "200"
