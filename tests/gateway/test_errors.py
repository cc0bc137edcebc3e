"""Refusals in OpenAI's exact error shape: auth, scope, suspension, unknown model, bad bodies, size, rate limits."""

from __future__ import annotations

import time
from typing import Any

import httpx2 as httpx
import openai
import pytest

from tests.support.gateway import Key, Process, World

CHAT = "/v1/chat/completions"
HELLO = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def tenant(world: World, gateway: Process, upstream: Process) -> str:
    slug = world.tenant()
    world.deployment(slug, "chat", [upstream.url])
    world.publish(gateway)
    return slug


@pytest.fixture(scope="module")
def good_key(world: World, gateway: Process, tenant: str) -> Key:
    key = world.key(tenant)
    world.publish(gateway)
    return key


def post(
    gateway: Process, key: str | None, body: Any = None, raw: bytes | None = None, path: str = CHAT
) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key is not None else {}
    if raw is not None:
        return httpx.post(gateway.url + path, content=raw, headers=headers, timeout=10)
    return httpx.post(gateway.url + path, json=HELLO if body is None else body, headers=headers, timeout=10)


def assert_error_shape(
    response: httpx.Response, status: int, code: str | None, param: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)
    assert error["code"] == code
    assert error["param"] == param
    return error


def test_it_refuses_a_missing_key(gateway: Process, tenant: str) -> None:
    assert_error_shape(post(gateway, None), 401, "invalid_api_key")


@pytest.mark.parametrize("presented", ["nonsense", "fd_test_abcdefgh_" + "x" * 40, "sk-" + "a" * 48])
def test_it_refuses_an_unknown_or_malformed_key(gateway: Process, tenant: str, presented: str) -> None:
    assert_error_shape(post(gateway, presented), 401, "invalid_api_key")


def test_it_refuses_a_key_with_a_wrong_secret(gateway: Process, good_key: Key) -> None:
    forged = good_key.full[:-4] + ("AAAA" if not good_key.full.endswith("AAAA") else "BBBB")
    assert_error_shape(post(gateway, forged), 401, "invalid_api_key")


def test_it_refuses_a_revoked_key(world: World, gateway: Process, tenant: str) -> None:
    key = world.key(tenant, revoked=True)
    world.publish(gateway)
    error = assert_error_shape(post(gateway, key.full), 401, "invalid_api_key")
    assert "revoked" in error["message"]


def test_it_refuses_an_expired_key(world: World, gateway: Process, tenant: str) -> None:
    key = world.key(tenant, expires_at=time.time() - 1)
    world.publish(gateway)
    error = assert_error_shape(post(gateway, key.full), 401, "invalid_api_key")
    assert "expired" in error["message"]


def test_it_refuses_a_key_without_the_inference_scope(world: World, gateway: Process, tenant: str) -> None:
    key = world.key(tenant, scopes=("read", "manage"))
    world.publish(gateway)
    assert_error_shape(post(gateway, key.full), 403, "insufficient_scope")


def test_it_refuses_every_key_of_a_suspended_tenant(world: World, gateway: Process, upstream: Process) -> None:
    slug = world.tenant(status="suspended")
    world.deployment(slug, "chat", [upstream.url])
    key = world.key(slug)
    world.publish(gateway)
    error = assert_error_shape(post(gateway, key.full), 403, "tenant_suspended")
    assert error["type"] == "permission_error"


def test_it_answers_404_for_a_model_the_tenant_does_not_have(
    world: World, gateway: Process, good_key: Key, upstream: Process
) -> None:
    other = world.tenant()
    world.deployment(other, "theirs", [upstream.url])
    world.publish(gateway)
    for model in ("theirs", "gpt-4o"):
        error = assert_error_shape(post(gateway, good_key.full, {**HELLO, "model": model}), 404, "model_not_found")
        assert model in error["message"]


def test_it_gives_the_openai_client_typed_errors(gateway: Process, good_key: Key) -> None:
    client = openai.OpenAI(api_key=good_key.full, base_url=gateway.url + "/v1", max_retries=0)
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="missing", messages=[{"role": "user", "content": "x"}])
    assert not_found.value.code == "model_not_found"
    bad = openai.OpenAI(api_key="fd_test_zzzzzzzz_" + "z" * 40, base_url=gateway.url + "/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])


def test_it_rejects_invalid_json(gateway: Process, good_key: Key) -> None:
    assert_error_shape(post(gateway, good_key.full, raw=b"{not json"), 400, "invalid_json")
    assert_error_shape(post(gateway, good_key.full, raw=b"[1, 2]"), 400, "invalid_json")


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (CHAT, {"messages": [{"role": "user", "content": "x"}]}, "model"),
        (CHAT, {"model": "chat"}, "messages"),
        ("/v1/completions", {"model": "chat"}, "prompt"),
        ("/v1/embeddings", {"model": "chat"}, "input"),
    ],
)
def test_it_names_the_missing_field(
    gateway: Process, good_key: Key, path: str, body: dict[str, Any], param: str
) -> None:
    error = assert_error_shape(post(gateway, good_key.full, body, path=path), 400, "missing_required_parameter", param)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(("field", "value"), [("max_tokens", 10**9), ("n", 10**6), ("max_tokens", -3), ("n", "two")])
def test_it_refuses_out_of_range_max_tokens_and_n(gateway: Process, good_key: Key, field: str, value: Any) -> None:
    assert_error_shape(post(gateway, good_key.full, {**HELLO, field: value}), 400, "invalid_value", field)


def test_it_refuses_a_body_over_the_cap_with_413(gateway: Process, good_key: Key) -> None:
    huge = b'{"model": "chat", "messages": [{"role": "user", "content": "' + b"a" * (2 * 1024 * 1024) + b'"}]}'
    assert_error_shape(post(gateway, good_key.full, raw=huge), 413, "request_too_large")


def test_it_refuses_a_chunked_body_over_the_cap_with_413(gateway: Process, good_key: Key) -> None:
    def chunks():  # no content-length: the gateway must count while reading
        yield b'{"model": "chat", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"a" * 65536
        yield b'"}]}'

    response = httpx.post(
        gateway.url + CHAT, content=chunks(), headers={"authorization": f"Bearer {good_key.full}"}, timeout=10
    )
    assert_error_shape(response, 413, "request_too_large")


def test_it_answers_unknown_paths_with_404_in_the_openai_shape(gateway: Process) -> None:
    assert_error_shape(httpx.get(gateway.url + "/v1/nothing-here", timeout=5), 404, "unknown_url")


def test_it_echoes_a_plain_client_request_id_and_replaces_a_bad_one(gateway: Process, good_key: Key) -> None:
    headers = {"authorization": f"Bearer {good_key.full}"}
    mine = httpx.post(gateway.url + CHAT, json=HELLO, headers={**headers, "x-request-id": "abc-123"}, timeout=10)
    assert mine.headers["x-request-id"] == "abc-123"
    odd = httpx.post(gateway.url + CHAT, json=HELLO, headers={**headers, "x-request-id": "a b<c>"}, timeout=10)
    assert odd.headers["x-request-id"] != "a b<c>"
    assert odd.headers["x-request-id"]


def test_it_answers_429_with_the_exact_shape_and_headers_past_the_rpm(
    world: World, gateway: Process, tenant: str
) -> None:
    key = world.key(tenant, requests_per_minute=2)
    world.publish(gateway)
    first = [post(gateway, key.full) for _ in range(2)]
    assert [r.status_code for r in first] == [200, 200]
    assert first[0].headers["x-ratelimit-limit-requests"] == "2"
    assert first[1].headers["x-ratelimit-remaining-requests"] == "0"
    refused = post(gateway, key.full)
    error = assert_error_shape(refused, 429, "rate_limit_exceeded")
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
    assert "x-should-retry" not in refused.headers
    assert error["type"] == "rate_limit_error"


def test_it_answers_insufficient_quota_with_no_retry_when_the_budget_is_spent(
    world: World, gateway: Process, upstream: Process
) -> None:
    slug = world.tenant(monthly_token_budget=5)
    world.deployment(slug, "chat", [upstream.url])
    key = world.key(slug)
    world.publish(gateway)
    response = post(gateway, key.full, {**HELLO, "max_tokens": 100})
    assert_error_shape(response, 429, "insufficient_quota")
    assert response.headers["x-should-retry"] == "false"
