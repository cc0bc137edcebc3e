"""https external endpoints: the official client through the gateway to a model server that speaks TLS.

The certificates are made here at run time: a test CA (handed to the gateway as
``FRONTDOOR_GATEWAY_UPSTREAM_CA_BUNDLE``) signs the model server's certificate (DNS ``localhost``, IP 127.0.0.1);
another CA nobody trusts signs the certificate of a server that must be refused.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
import redis

from tests.gateway.pki import Authority, server_context
from tests.gateway.scripted import scripted_upstream
from tests.support.gateway import (
    BASE_PREFIX,
    ROOT,
    Key,
    Process,
    World,
    clear_prefix,
    free_port,
    start_gateway,
    stop,
    usage_events,
)

EMBED_MODEL = "frontdoor/sim-embed"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Authority, Authority]:
    folder = tmp_path_factory.mktemp("pki")
    return folder, Authority.create(folder, "frontdoor-test-ca"), Authority.create(folder, "nobody-trusts-this-ca")


@pytest.fixture(scope="module")
def tls_upstream(session_tmp: Path, pki: tuple[Path, Authority, Authority]) -> Iterator[Process]:
    """The built-in model server under uvicorn with TLS, its certificate signed by the test CA."""
    folder, ca, _ = pki
    cert, key = ca.issue(folder, "modelserver")
    port = free_port()
    log_path = session_tmp / f"tls-modelserver-{port}.log"
    argv = [
        sys.executable, "-m", "uvicorn", "modelserver.app:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port),
        "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--log-level", "warning",
    ]  # fmt: skip
    with log_path.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    trust = ssl.create_default_context(cafile=str(ca.pem))
    for _ in range(400):
        if proc.poll() is not None:
            raise RuntimeError(f"the TLS model server exited: {log_path.read_text()}")
        try:
            if httpx.get(f"https://127.0.0.1:{port}/health", verify=trust, timeout=0.5).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    yield Process(proc, f"https://127.0.0.1:{port}", log_path)
    stop(proc)


@pytest.fixture(scope="module")
def tls_world(redis_client: redis.Redis) -> Iterator[World]:
    world = World(redis_client, f"{BASE_PREFIX}-tls-{uuid.uuid4().hex[:6]}")
    world.network = {"allowed_networks": ["127.0.0.0/8"], "platform_services": []}
    world.publish()
    yield world
    clear_prefix(redis_client, world.prefix)


@pytest.fixture(scope="module")
def tls_gateway(session_tmp: Path, tls_world: World, pki: tuple[Path, Authority, Authority]) -> Iterator[Process]:
    proc = start_gateway(session_tmp, tls_world.prefix, FRONTDOOR_GATEWAY_UPSTREAM_CA_BUNDLE=str(pki[1].pem))
    yield proc
    stop(proc.proc)


@pytest.fixture(scope="module")
def tenant_key(tls_world: World, tls_gateway: Process, tls_upstream: Process) -> Key:
    port = tls_upstream.url.rsplit(":", 1)[1]
    tenant = tls_world.tenant()
    tls_world.deployment(tenant, "tls-chat", [f"https://localhost:{port}"], runtime="external")
    tls_world.deployment(tenant, "tls-by-ip", [f"https://127.0.0.1:{port}"], runtime="external")
    tls_world.deployment(tenant, "tls-embed", [f"https://localhost:{port}"], model=EMBED_MODEL, runtime="external")
    key = tls_world.key(tenant)
    tls_world.publish(tls_gateway)
    return key


def client_for(gateway: Process, key: Key) -> openai.OpenAI:
    return openai.OpenAI(api_key=key.full, base_url=gateway.url + "/v1", max_retries=0, timeout=15)


def test_it_answers_a_chat_completion_from_an_https_endpoint(tls_gateway: Process, tenant_key: Key) -> None:
    reply = client_for(tls_gateway, tenant_key).chat.completions.create(
        model="tls-chat", messages=[{"role": "user", "content": "hello over tls"}], max_tokens=5
    )
    assert reply.model == "tls-chat"
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens <= 5


def test_it_verifies_an_https_endpoint_named_by_its_address(tls_gateway: Process, tenant_key: Key) -> None:
    reply = client_for(tls_gateway, tenant_key).chat.completions.create(
        model="tls-by-ip", messages=[{"role": "user", "content": "hello"}], max_tokens=3
    )
    assert reply.choices[0].message.content


def test_it_streams_a_chat_completion_from_an_https_endpoint(
    tls_gateway: Process, tenant_key: Key, redis_client: redis.Redis, tls_world: World
) -> None:
    stream = client_for(tls_gateway, tenant_key).chat.completions.create(
        model="tls-chat",
        messages=[{"role": "user", "content": "stream it"}],
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert content
    assert all(c.model == "tls-chat" for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(content)


def test_it_answers_a_text_completion_from_an_https_endpoint(tls_gateway: Process, tenant_key: Key) -> None:
    client = client_for(tls_gateway, tenant_key)
    whole = client.completions.create(model="tls-chat", prompt="Once upon a time", max_tokens=4)
    assert whole.choices[0].text
    streamed = list(client.completions.create(model="tls-chat", prompt="Once upon", max_tokens=4, stream=True))
    assert any(c.choices and c.choices[0].text for c in streamed)


def test_it_embeds_through_an_https_endpoint(
    tls_gateway: Process, tenant_key: Key, redis_client: redis.Redis, tls_world: World
) -> None:
    reply = client_for(tls_gateway, tenant_key).embeddings.create(model="tls-embed", input=["one", "two words"])
    assert reply.model == "tls-embed"
    assert [d.index for d in reply.data] == [0, 1]
    assert reply.usage.prompt_tokens > 0
    for _ in range(200):
        events = [e for e in usage_events(redis_client, tls_world.prefix, tenant_key) if e["status"] == "200"]
        if any(int(e["prompt_tokens"]) == reply.usage.prompt_tokens for e in events):
            break
        time.sleep(0.01)
    else:
        raise AssertionError("no usage event with the embeddings' tokens")


def test_it_refuses_an_https_endpoint_whose_certificate_it_does_not_trust(
    tls_gateway: Process, tls_world: World, pki: tuple[Path, Authority, Authority]
) -> None:
    folder, _, rogue = pki
    with scripted_upstream(tls=server_context(*rogue.issue(folder, "untrusted"))) as untrusted:
        tenant = tls_world.tenant()
        tls_world.deployment(tenant, "tls-rogue", [untrusted.url], runtime="external")
        key_ = tls_world.key(tenant)
        tls_world.publish(tls_gateway)
        response = httpx.post(
            tls_gateway.url + "/v1/chat/completions",
            json={"model": "tls-rogue", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            headers={"authorization": f"Bearer {key_.full}"},
            timeout=15,
        )
        assert response.status_code == 502
        assert response.json()["error"] == {
            "message": "The endpoint of 'tls-rogue' could not be reached.",
            "type": "upstream_error",
            "param": None,
            "code": "upstream_unavailable",
        }
        assert untrusted.received == []
    assert "certificate verify failed" in tls_gateway.log()
