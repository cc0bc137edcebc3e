"""CORS at the gateway: a page of an allowed origin may call the inference routes and /v2 from a browser; any
other origin gets no CORS header, and its preflight a 403 in the route's error shape.

Real gateway processes: one that allows the console's origin, and the session's gateway with the development
default. The origin list's parsing is checked through ``GatewayConfig.from_env``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from controlplane.contracts.env import ImproperlyConfiguredEnv
from gateway.config import GatewayConfig
from tests.support.gateway import Key, Process, World, start_gateway, start_modelserver, stop

CONSOLE = "https://console.frontdoor.test"
OTHER = "https://evil.example.test"
V2_BODY = {
    "inputs": [
        {"name": "user_id", "shape": [2], "datatype": "INT64", "data": [1, 2]},
        {"name": "item_id", "shape": [2], "datatype": "INT64", "data": [10, 20]},
    ]
}
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8}


@pytest.fixture(scope="module")
def cors_gateway(session_tmp: Path, prefix: str, world: World) -> Iterator[Process]:
    origins = f" {CONSOLE}/ , HTTP://LocalHost:8000"  # written loosely: the gateway compares them as browsers write
    proc = start_gateway(session_tmp, prefix, FRONTDOOR_GATEWAY_CORS_ORIGINS=origins)
    yield proc
    stop(proc.proc)


@pytest.fixture(scope="module")
def ranker(session_tmp: Path) -> Iterator[Process]:
    proc = start_modelserver(session_tmp, "--protocol", "v2", "--model-name", "frontdoor/ranker")
    yield proc
    stop(proc.proc)


@pytest.fixture(scope="module")
def key(world: World, cors_gateway: Process, gateway: Process, upstream: Process, ranker: Process) -> Key:
    tenant = world.tenant(requests_per_minute=10_000)
    world.deployment(tenant, "chat", [upstream.url])
    world.deployment(tenant, "ranker", [ranker.url], model="frontdoor/ranker", protocol="v2")
    issued = world.key(tenant)
    world.publish(cors_gateway, gateway)
    return issued


def preflight(gateway: Process, path: str, origin: str | None, method: str = "POST") -> httpx.Response:
    headers = {"access-control-request-method": method, "access-control-request-headers": "authorization,content-type"}
    if origin is not None:
        headers["origin"] = origin
    return httpx.request("OPTIONS", gateway.url + path, headers=headers, timeout=5)


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {name: value for name, value in response.headers.items() if name.startswith("access-control-")}


def bearer(key: Key, origin: str | None = None) -> dict[str, str]:
    headers = {"authorization": f"Bearer {key.full}"}
    if origin is not None:
        headers["origin"] = origin
    return headers


BROWSER_ROUTES = [
    ("/v1/chat/completions", "POST"),
    ("/v1/completions", "POST"),
    ("/v1/embeddings", "POST"),
    ("/v1/images/generations", "POST"),
    ("/v1/models", "GET"),
    ("/v2/models/ranker/infer", "POST"),
    ("/v2/models/ranker", "GET"),
    ("/v2/health/ready", "GET"),
]


@pytest.mark.parametrize(("path", "method"), BROWSER_ROUTES)
def test_it_answers_the_preflight_of_an_allowed_origin_without_a_key(
    cors_gateway: Process, path: str, method: str
) -> None:
    answer = preflight(cors_gateway, path, CONSOLE, method)

    assert answer.status_code == 204, answer.text
    assert answer.content == b""
    assert answer.headers["access-control-allow-origin"] == CONSOLE
    assert method in answer.headers["access-control-allow-methods"].split(", ")
    allowed = answer.headers["access-control-allow-headers"].split(", ")
    assert set(allowed) == {"authorization", "content-type", "x-request-id"}
    assert answer.headers["access-control-max-age"] == "600"
    assert answer.headers["vary"] == "origin"
    assert "access-control-allow-credentials" not in answer.headers


@pytest.mark.parametrize(
    "origin",
    [
        OTHER,
        "null",  # a sandboxed frame or a file:// page
        "http://console.frontdoor.test",  # another scheme is another origin
        "https://console.frontdoor.test:8443",  # and so is another port
        "https://console.frontdoor.test.evil.example.test",
        None,  # a preflight without Origin is no browser's
    ],
)
def test_it_refuses_the_preflight_of_any_other_origin_with_the_routes_error_and_no_cors_header(
    cors_gateway: Process, origin: str | None
) -> None:
    refused = preflight(cors_gateway, "/v1/chat/completions", origin)

    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "origin_not_allowed"
    assert refused.json()["error"]["type"] == "permission_error"
    assert cors_headers(refused) == {} and "vary" not in refused.headers


def test_a_refused_preflight_under_v2_has_the_v2_error_shape(cors_gateway: Process) -> None:
    refused = preflight(cors_gateway, "/v2/models/ranker/infer", OTHER)

    assert refused.status_code == 403
    assert refused.json() == {"error": "Cross-origin requests from this origin are not allowed."}
    assert cors_headers(refused) == {}


def test_the_origins_are_compared_as_browsers_write_them(cors_gateway: Process) -> None:
    # Configured as "HTTP://LocalHost:8000": browsers send the scheme and host in lowercase.
    assert preflight(cors_gateway, "/v1/chat/completions", "http://localhost:8000").status_code == 204
    assert preflight(cors_gateway, "/v1/chat/completions", "HTTP://LOCALHOST:8000").status_code == 403


def test_an_answer_to_an_allowed_origin_names_it_and_exposes_the_request_id_and_limits(
    cors_gateway: Process, key: Key
) -> None:
    answer = httpx.post(f"{cors_gateway.url}/v1/chat/completions", json=CHAT, headers=bearer(key, CONSOLE), timeout=10)

    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]
    assert answer.headers["access-control-allow-origin"] == CONSOLE
    assert answer.headers["vary"] == "origin"
    exposed = answer.headers["access-control-expose-headers"].split(", ")
    assert "x-request-id" in exposed
    assert {"x-ratelimit-remaining-requests", "x-ratelimit-reset-tokens"} <= set(exposed)
    assert "x-ratelimit-remaining-requests" in answer.headers  # what the page may read is there to read
    assert "access-control-allow-credentials" not in answer.headers


def test_a_stream_to_an_allowed_origin_carries_the_cors_headers(cors_gateway: Process, key: Key) -> None:
    body = CHAT | {"stream": True}
    with httpx.stream(
        "POST", f"{cors_gateway.url}/v1/chat/completions", json=body, headers=bearer(key, CONSOLE), timeout=10
    ) as answer:
        text = answer.read().decode()

    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == CONSOLE
    assert text.rstrip().endswith("data: [DONE]")


def test_a_v2_infer_to_an_allowed_origin_carries_the_cors_headers(cors_gateway: Process, key: Key) -> None:
    answer = httpx.post(
        f"{cors_gateway.url}/v2/models/ranker/infer", json=V2_BODY, headers=bearer(key, CONSOLE), timeout=10
    )

    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["name"] == "score"
    assert answer.headers["access-control-allow-origin"] == CONSOLE


@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/chat/completions", CHAT), ("/v2/models/ranker/infer", V2_BODY)],
)
def test_a_refusal_to_an_allowed_origin_is_readable_by_its_page(
    cors_gateway: Process, key: Key, path: str, body: dict[str, Any]
) -> None:
    headers = {"authorization": "Bearer fd_test_nokey123_" + "A" * 40, "origin": CONSOLE}

    refused = httpx.post(cors_gateway.url + path, json=body, headers=headers, timeout=5)

    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == CONSOLE


def test_an_answer_to_another_origin_carries_no_cors_header(cors_gateway: Process, key: Key) -> None:
    answer = httpx.post(f"{cors_gateway.url}/v1/chat/completions", json=CHAT, headers=bearer(key, OTHER), timeout=10)

    # The gateway serves it (a server cannot stop a non-browser client); the browser withholds it from the page.
    assert answer.status_code == 200
    assert cors_headers(answer) == {} and "vary" not in answer.headers


def test_a_request_without_origin_is_answered_as_before(cors_gateway: Process, key: Key) -> None:
    answer = httpx.post(f"{cors_gateway.url}/v1/chat/completions", json=CHAT, headers=bearer(key), timeout=10)

    assert answer.status_code == 200
    assert cors_headers(answer) == {}


def test_a_bare_options_request_is_still_a_wrong_method(cors_gateway: Process) -> None:
    answer = httpx.request("OPTIONS", f"{cors_gateway.url}/v1/chat/completions", headers={"origin": CONSOLE}, timeout=5)

    assert answer.status_code == 405
    assert answer.json()["error"]["code"] == "method_not_allowed"
    assert answer.headers["access-control-allow-origin"] == CONSOLE  # the page may read why


@pytest.mark.parametrize("path", ["/v1/files", "/v1/batches", "/healthz", "/metrics"])
def test_routes_no_page_calls_answer_no_cors(cors_gateway: Process, path: str) -> None:
    answer = preflight(cors_gateway, path, CONSOLE)

    assert answer.status_code in {404, 405}
    assert cors_headers(answer) == {}


def test_the_development_default_allows_the_console_of_make_run(gateway: Process) -> None:
    assert preflight(gateway, "/v1/chat/completions", "http://127.0.0.1:8000").status_code == 204
    assert preflight(gateway, "/v1/chat/completions", "http://localhost:8000").status_code == 204
    assert preflight(gateway, "/v1/chat/completions", CONSOLE).status_code == 403


# ---------------------------------------------------------------- the origin list (FRONTDOOR_GATEWAY_CORS_ORIGINS)


def test_it_reads_the_origins_as_browsers_write_them(monkeypatch: pytest.MonkeyPatch) -> None:
    given = "https://Console.Example.test:443/, http://127.0.0.1:8000,,http://[::1]:9000 ,http://a.test:80"
    monkeypatch.setenv("FRONTDOOR_GATEWAY_CORS_ORIGINS", given)

    assert GatewayConfig.from_env().cors_origins == {
        "https://console.example.test",
        "http://127.0.0.1:8000",
        "http://[::1]:9000",
        "http://a.test",
    }


def test_the_default_is_the_development_console_and_none_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRONTDOOR_GATEWAY_CORS_ORIGINS", raising=False)
    monkeypatch.delenv("FRONTDOOR_ENV", raising=False)
    assert GatewayConfig.from_env().cors_origins == {"http://127.0.0.1:8000", "http://localhost:8000"}

    monkeypatch.setenv("FRONTDOOR_ENV", "production")
    monkeypatch.setenv("FRONTDOOR_KEY_PEPPER", "p" * 40)
    monkeypatch.setenv("FRONTDOOR_INTERNAL_TOKEN", "t" * 40)
    assert GatewayConfig.from_env().cors_origins == frozenset()


def test_none_allows_no_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRONTDOOR_GATEWAY_CORS_ORIGINS", "none")
    assert GatewayConfig.from_env().cors_origins == frozenset()
    assert GatewayConfig().cors_origins == frozenset()  # a config built in code allows none either


@pytest.mark.parametrize(
    "origin",
    [
        "*",
        "null",
        "https://*.example.test",
        "console.example.test",
        "ftp://console.example.test",
        "https://console.example.test/path",
        "https://console.example.test?q=1",
        "https://console.example.test#top",
        "https://user:pw@console.example.test",
        "https://console.example.test:99999",
        "https://",
    ],
)
def test_it_refuses_anything_but_exact_origins(monkeypatch: pytest.MonkeyPatch, origin: str) -> None:
    monkeypatch.setenv("FRONTDOOR_GATEWAY_CORS_ORIGINS", f"http://127.0.0.1:8000,{origin}")

    with pytest.raises(ImproperlyConfiguredEnv, match="FRONTDOOR_GATEWAY_CORS_ORIGINS"):
        GatewayConfig.from_env()
