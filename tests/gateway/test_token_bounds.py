"""Completion limits: what the gateway reserves bounds what the upstream may generate.

Both ``max_tokens`` and ``max_completion_tokens`` are checked on both endpoints (positive integers within the cap),
the reservation takes the larger one times ``max(n, best_of)`` times the prompts, the prompt estimate covers
everything the model reads as prompt (tools, names, schemas), and the body sent upstream carries the reserved
limit, so no combination of fields lets an upstream generate past the reservation or a budget be overspent.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.contracts.redis_names import budget_key_prefix
from gateway.config import GatewayConfig
from gateway.errors import GatewayError
from gateway.generation import upstream_body
from gateway.validation import CHAT, COMPLETIONS, parse_request
from tests.gateway.scripted import scripted_upstream
from tests.support.gateway import (
    BASE_PREFIX,
    Key,
    Process,
    World,
    clear_prefix,
    start_gateway,
    start_modelserver,
    stop,
    usage_events,
)

CONFIG = GatewayConfig()
CAP = CONFIG.max_tokens_cap
MESSAGES = [{"role": "user", "content": "hi"}]
UNBOUNDED = float("inf")


def parse(kind: str, body: dict[str, Any]) -> Any:
    return parse_request(kind, orjson.dumps(body), CONFIG)


def refusal(kind: str, body: dict[str, Any]) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        parse(kind, body)
    return caught.value


def base(kind: str) -> dict[str, Any]:
    return {"model": "m", "messages": MESSAGES} if kind == CHAT else {"model": "m", "prompt": "go"}


def permitted_output(kind: str, sent: dict[str, Any]) -> float:
    """The most completion tokens an OpenAI-compatible server may generate for the body it received.

    A server may read either limit field (vLLM's chat reads max_completion_tokens first, TGI only max_tokens;
    completions read max_tokens only), so the larger one present counts; none present is no bound at all.
    """
    names = ("max_tokens",) if kind == COMPLETIONS else ("max_tokens", "max_completion_tokens")
    limits = [sent[name] for name in names if sent.get(name) is not None]
    per_choice: float = max(limits) if limits else UNBOUNDED
    sequences = max(sent.get("n") or 1, sent.get("best_of") or 1)
    prompt = sent.get("prompt")
    prompts = len(prompt) if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int) else 1
    return per_choice * sequences * prompts


@pytest.mark.parametrize("kind", [CHAT, COMPLETIONS])
@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("value", [0, -5, CAP + 1, 100_000, True, 2.5, "7"])
def test_it_checks_both_limit_fields_on_both_endpoints_even_when_the_other_is_sent(
    kind: str, field: str, value: Any
) -> None:
    other = "max_completion_tokens" if field == "max_tokens" else "max_tokens"
    error = refusal(kind, {**base(kind), other: 1, field: value})
    assert (error.status, error.code, error.param) == (400, "invalid_value", field)


@pytest.mark.parametrize("kind", [CHAT, COMPLETIONS])
@pytest.mark.parametrize("field", ["n", "best_of"])
@pytest.mark.parametrize("value", [0, -1, CONFIG.n_cap + 1, True, "2"])
def test_it_checks_n_and_best_of_against_the_cap(kind: str, field: str, value: Any) -> None:
    error = refusal(kind, {**base(kind), field: value})
    assert (error.status, error.code, error.param) == (400, "invalid_value", field)


def test_it_reserves_the_larger_limit_times_the_sequences_and_prompts() -> None:
    body = {"model": "m", "prompt": ["a", "b", "c"], "max_completion_tokens": 1, "max_tokens": 500, "n": 2}
    assert parse(COMPLETIONS, {**body, "best_of": 4}).max_tokens == 500 * 4 * 3
    assert parse(COMPLETIONS, body).max_tokens == 500 * 2 * 3
    chat = {"model": "m", "messages": MESSAGES, "max_tokens": 9, "max_completion_tokens": 40, "n": 3}
    assert parse(CHAT, chat).max_tokens == 40 * 3


def test_it_reserves_and_writes_the_default_when_the_client_sends_no_limit() -> None:
    for kind in (CHAT, COMPLETIONS):
        parsed = parse(kind, base(kind))
        assert parsed.max_tokens == CONFIG.default_max_tokens
        sent = orjson.loads(upstream_body(parsed, "upstream-model"))
        assert sent["max_tokens"] == CONFIG.default_max_tokens


def test_it_counts_tools_names_tool_calls_and_schemas_as_prompt() -> None:
    schema = {"type": "object", "properties": {f"field_{i}": {"type": "string"} for i in range(200)}}
    tools = [{"type": "function", "function": {"name": "lookup", "description": "d" * 3000, "parameters": schema}}]
    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "' + "x" * 2000}}
    messages = [
        {"role": "system", "name": "n" * 500, "content": "be brief"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    ]
    body = {
        "model": "m",
        "messages": messages,
        "tools": tools,
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
    }
    prompt_json = sum(len(orjson.dumps(body[name])) for name in ("messages", "tools", "response_format"))
    assert parse(CHAT, body).prompt_estimate >= prompt_json


def test_it_bounds_a_prompt_of_multibyte_characters_by_its_bytes() -> None:
    text = "漢字🙂" * 100  # byte-level BPE may spend one token per byte of such characters
    assert parse(CHAT, {"model": "m", "messages": [{"role": "user", "content": text}]}).prompt_estimate >= len(
        text.encode()
    )


limit = st.one_of(st.none(), st.integers(min_value=-3, max_value=CAP + 3), st.booleans())
count = st.one_of(st.none(), st.integers(min_value=-1, max_value=CONFIG.n_cap + 1))
prompt = st.one_of(
    st.text(max_size=5),
    st.lists(st.text(max_size=3), min_size=1, max_size=4),
    st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=4),
    st.lists(st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=3), min_size=1, max_size=4),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from([CHAT, COMPLETIONS]),
    max_tokens=limit,
    max_completion_tokens=limit,
    n=count,
    best_of=count,
    prompt=prompt,
    stream=st.booleans(),
    tenant_given=st.booleans(),
)
def test_no_accepted_body_lets_the_upstream_generate_more_than_was_reserved(
    kind: str,
    max_tokens: Any,
    max_completion_tokens: Any,
    n: Any,
    best_of: Any,
    prompt: Any,
    stream: bool,
    tenant_given: bool,
) -> None:
    body: dict[str, Any] = {"model": "m", "stream": stream}
    if kind == CHAT:
        body["messages"] = [{"role": "user", "content": prompt if isinstance(prompt, str) else "x"}]
    else:
        body["prompt"] = prompt
    for name, value in (
        ("max_tokens", max_tokens),
        ("max_completion_tokens", max_completion_tokens),
        ("n", n),
        ("best_of", best_of),
    ):
        if value is not None:
            body[name] = value
    try:
        parsed = parse(kind, body)
    except GatewayError as error:
        assert error.status == 400 and error.param in ("max_tokens", "max_completion_tokens", "n", "best_of")
        return
    sent = orjson.loads(upstream_body(parsed, "upstream-model", tenant_given))
    assert permitted_output(kind, sent) <= parsed.max_tokens
    assert parsed.max_tokens <= CAP * CONFIG.n_cap * max(1, len(prompt) if isinstance(prompt, list) else 1)
    assert sent["model"] == "upstream-model"


def sent_limits(body: dict[str, Any], tenant_given: bool = False) -> dict[str, Any]:
    sent = orjson.loads(upstream_body(parse(CHAT, {"model": "m", "messages": MESSAGES, **body}), "u", tenant_given))
    return {name: sent[name] for name in ("max_tokens", "max_completion_tokens") if name in sent}


def test_the_upstream_body_carries_the_limit_in_the_fields_each_upstream_reads() -> None:
    # Replicas the platform runs all read max_tokens; vLLM prefers max_completion_tokens when it is there.
    assert sent_limits({}) == {"max_tokens": CONFIG.default_max_tokens}
    assert sent_limits({"max_tokens": 9}) == {"max_tokens": 9}
    assert sent_limits({"max_completion_tokens": 5}) == {"max_tokens": 5, "max_completion_tokens": 5}
    assert sent_limits({"max_completion_tokens": 5, "max_tokens": 30}) == {
        "max_tokens": 30,
        "max_completion_tokens": 30,
    }
    # A tenant's endpoint may be OpenAI: one field only, never max_tokens unless that is what the client sent.
    assert sent_limits({}, True) == {"max_completion_tokens": CONFIG.default_max_tokens}
    assert sent_limits({"max_tokens": 9}, True) == {"max_tokens": 9}
    assert sent_limits({"max_completion_tokens": 5}, True) == {"max_completion_tokens": 5}
    assert sent_limits({"max_completion_tokens": 5, "max_tokens": 30}, True) == {"max_completion_tokens": 30}
    completion = parse(COMPLETIONS, {"model": "m", "prompt": "go", "max_completion_tokens": 7})
    sent = orjson.loads(upstream_body(completion, "u"))
    assert sent["max_tokens"] == 7 and "max_completion_tokens" not in sent


# --- through a real gateway ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bounds_world(redis_client: redis.Redis) -> Iterator[World]:
    world = World(redis_client, f"{BASE_PREFIX}-bounds-{uuid.uuid4().hex[:6]}")
    world.publish()
    yield world
    clear_prefix(redis_client, world.prefix)


@pytest.fixture(scope="module")
def bounds_gateway(session_tmp: Path, bounds_world: World) -> Iterator[Process]:
    proc = start_gateway(session_tmp, bounds_world.prefix)
    yield proc
    stop(proc.proc)


@pytest.fixture(scope="module")
def lingering_upstream(session_tmp: Path) -> Iterator[Process]:
    """Answers after a second, so that concurrent requests are all in flight together."""
    proc = start_modelserver(session_tmp, "--ttft-ms", "1000")
    yield proc
    stop(proc.proc)


def post(gateway: Process, key: Key, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(gateway.url + path, json=body, headers={"authorization": f"Bearer {key.full}"}, timeout=30)


def metered_tokens(client: redis.Redis, world: World, key: Key, count: int) -> int:
    for _ in range(500):
        events = usage_events(client, world.prefix, key)
        if len(events) >= count:
            break
        time.sleep(0.01)
    assert len(events) == count
    return sum(int(e["prompt_tokens"]) + int(e["completion_tokens"]) for e in events)


def test_it_refuses_the_bypass_request_in_openai_shape(
    bounds_world: World, bounds_gateway: Process, upstream: Process
) -> None:
    tenant = bounds_world.tenant()
    bounds_world.deployment(tenant, "chat", [upstream.url])
    key = bounds_world.key(tenant)
    bounds_world.publish(bounds_gateway)
    bypass = {"model": "chat", "prompt": "go", "max_completion_tokens": 1, "max_tokens": 100_000}
    response = post(bounds_gateway, key, "/v1/completions", bypass)
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "message": f"'max_tokens' is 100000, above this gateway's limit of {CAP}.",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": "invalid_value",
        }
    }
    chat = {"model": "chat", "messages": MESSAGES, "max_completion_tokens": 5, "max_tokens": -5}
    assert post(bounds_gateway, key, "/v1/chat/completions", chat).json()["error"]["param"] == "max_tokens"


def test_concurrent_requests_with_a_small_max_completion_tokens_cannot_overspend_the_budget(
    bounds_world: World, bounds_gateway: Process, lingering_upstream: Process, redis_client: redis.Redis
) -> None:
    budget = 1000
    tenant = bounds_world.tenant(monthly_token_budget=budget)
    bounds_world.deployment(tenant, "chat", [lingering_upstream.url])
    key = bounds_world.key(tenant)
    bounds_world.publish(bounds_gateway)
    bodies = [
        {"model": "chat", "prompt": f"tell me about {i}", "max_completion_tokens": 1, "max_tokens": 64, "n": 4}
        for i in range(60)
    ]
    with ThreadPoolExecutor(60) as pool:
        statuses = [r.status_code for r in pool.map(lambda b: post(bounds_gateway, key, "/v1/completions", b), bodies)]
    assert set(statuses) <= {200, 429}
    served = statuses.count(200)
    assert served >= 1
    assert metered_tokens(redis_client, bounds_world, key, served) <= budget
    [counter] = redis_client.scan_iter(match=budget_key_prefix(bounds_world.prefix, tenant) + "*")
    assert int(redis_client.get(counter) or 0) <= budget


def test_the_replica_receives_the_reserved_limit(bounds_world: World, bounds_gateway: Process) -> None:
    with scripted_upstream() as replica:
        tenant = bounds_world.tenant()
        bounds_world.deployment(tenant, "chat", [replica.url])
        key = bounds_world.key(tenant)
        bounds_world.publish(bounds_gateway)
        assert post(bounds_gateway, key, "/v1/chat/completions", {"model": "chat", "messages": MESSAGES}).is_success
        chat = {"model": "chat", "messages": MESSAGES, "max_completion_tokens": 3, "max_tokens": 11}
        assert post(bounds_gateway, key, "/v1/chat/completions", chat).is_success
    first, second = (r.body for r in replica.received)
    assert (first["max_tokens"], "max_completion_tokens" in first) == (CONFIG.default_max_tokens, False)
    assert second["max_tokens"] == second["max_completion_tokens"] == 11
