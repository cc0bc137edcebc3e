"""An external deployment's upstream key: a tenant secret the control plane seals into the snapshot, the gateway opens
with the seal key and sends to the deployment's endpoint as ``Authorization: Bearer``, and nothing else sees.

The end-to-end tests run the real parts: Postgres, the control plane's publisher (inline, on commit), Redis, a gateway
process, and a scripted OpenAI-shaped upstream on loopback that records the headers it receives (the operator allows
127.0.0.0/8 for external endpoints). The rest test the publisher's section and both transports; the gateway's
parse, its configuration and the embeddings batch key are in ``test_upstream_key_parse.py``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.contracts.addresses import AddressPolicy, parse_networks
from controlplane.contracts.redis_names import config_sections_key, config_version_key
from controlplane.contracts.sealing import Sealer, context, new_key
from controlplane.contracts.snapshot import read_document, tenant_section, upstream_key_context
from controlplane.redis import get_redis
from controlplane.snapshot.publisher import build_snapshot, publish_sections
from deployments.models import ModelDeployment, TenantSecret
from deployments.secrets import at_rest_sealer, create_secret, update_secret
from deployments.services import create_deployment, update_deployment
from gateway.transport import UpstreamTransport, pinned_destination
from gateway.upstream import UpstreamPool
from gateway.upstream_library import LibraryTransport
from quotas.models import Quota
from tenants.models import ApiKey, Tenant
from tests.gateway.scripted import Received, ScriptedUpstream, scripted_upstream
from tests.support.gateway import Process, start_gateway, stop, wait_for_version
from tests.support.isolation import RunNames

END_TO_END = (pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.timeout(120))
SECRET = "openai-key"
CHAT = {"model": "ext", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def end_to_end(test: Callable[..., None]) -> Callable[..., None]:
    """Postgres committed for real (the gateway reads what was published), processes started: slow."""
    for mark in END_TO_END:
        test = mark(test)
    return test


def upstream_value() -> str:
    """A key no other test holds, so that finding it anywhere means this test put it there."""
    return f"sk-upstream-{uuid.uuid4().hex}"


@pytest.fixture
def recorder() -> Iterator[ScriptedUpstream]:
    with scripted_upstream() as upstream:
        yield upstream


@pytest.fixture
def loopback_allowed(settings: Any, redis_prefix: str) -> None:
    """The operator allows loopback endpoints; set before any row is saved (every save publishes)."""
    settings.FRONTDOOR_EXTERNAL_ALLOWED_NETWORKS = ["127.0.0.0/8"]


def external_tenant(recorder: ScriptedUpstream, value: str, slug: str = "acme") -> tuple[Tenant, str]:
    """A tenant with the secret ``SECRET`` holding ``value`` and the external deployment ``ext`` at ``recorder``
    sending it upstream; the tenant and its inference key."""
    tenant = Tenant.objects.create(slug=slug, name=slug.title())
    Quota.unscoped_objects.create(tenant=tenant)
    _, full = ApiKey.issue(tenant=tenant, name="app", scopes=["inference"])
    create_secret(tenant, name=SECRET, value=value, actor=None)
    create_deployment(
        tenant,
        {
            "name": "ext",
            "runtime": "external",
            "model": "gpt-upstream",
            "endpoints": [recorder.url],
            "upstream_key_secret": SECRET,
        },
        actor=None,
    )
    return tenant, full


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A client that reads bytes as stored (the control plane's decodes them)."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def gateways(tmp_path: Path, redis_prefix: str, redis_url: str) -> Iterator[Callable[..., Process]]:
    """``start(**env)``: a gateway process on this test's prefix (the run's seal key unless ``env`` says otherwise)."""
    started: list[Process] = []

    def start(**env: str) -> Process:
        gateway = start_gateway(
            tmp_path, redis_prefix, redis_url, FRONTDOOR_KEY_PEPPER=django_settings.FRONTDOOR_KEY_PEPPER, **env
        )
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        stop(gateway.proc)


def current_version(client: redis.Redis, prefix: str) -> int:
    return int(client.get(config_version_key(prefix)) or 0)


def post(gateway: Process, full_key: str, path: str, body: dict[str, Any]) -> httpx.Response:
    headers = {"authorization": f"Bearer {full_key}"}
    return httpx.post(gateway.url + path, json=body, headers=headers, timeout=15)


def everything_stored(client: redis.Redis, patterns: list[str]) -> list[bytes]:
    """Every key under ``patterns`` and everything it holds, whatever its type; Celery's base64 bodies decoded."""
    found: list[bytes] = []
    for pattern in patterns:
        for key in client.scan_iter(match=pattern, count=1000):
            found.append(key)
            kind = client.type(key)
            if kind == b"string":
                found.append(client.get(key) or b"")
            elif kind == b"hash":
                found.extend(item for pair in client.hgetall(key).items() for item in pair)
            elif kind == b"set":
                found.extend(client.smembers(key))
            elif kind == b"zset":
                found.extend(client.zrange(key, 0, -1))
            elif kind == b"list":
                found.extend(client.lrange(key, 0, -1))
            elif kind == b"stream":
                found.extend(item for _, fields in client.xrange(key) for pair in fields.items() for item in pair)
            elif kind != b"none":  # "none": it expired between the scan and the read
                raise AssertionError(f"{key!r} is a {kind!r}, which this scan does not read")
    return found + [body for blob in found if (body := _celery_body(blob))]


def _celery_body(blob: bytes) -> bytes:
    try:
        message = orjson.loads(blob)
    except orjson.JSONDecodeError:
        return b""
    if not isinstance(message, dict) or not isinstance(message.get("body"), str):
        return b""
    try:
        return base64.b64decode(message["body"])
    except ValueError:
        return b""


def authorizations(received: list[Received]) -> list[str | None]:
    return [r.headers.get("authorization") for r in received]


# --- end to end -------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("loopback_allowed")
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", CHAT),
        ("/v1/chat/completions", {**CHAT, "stream": True}),
        ("/v1/completions", {"model": "ext", "prompt": "hi", "max_tokens": 3}),
        ("/v1/embeddings", {"model": "ext", "input": ["hello"]}),
    ],
    ids=["chat", "chat-stream", "completions", "embeddings"],
)
@end_to_end
def test_it_sends_the_upstream_key_and_never_the_clients_own(
    path: str,
    body: dict[str, Any],
    recorder: ScriptedUpstream,
    gateways: Callable[..., Process],
) -> None:
    value = upstream_value()
    _, full = external_tenant(recorder, value)
    gateway = gateways()

    response = post(gateway, full, path, body)

    assert response.status_code == 200, response.text
    [received] = recorder.received
    assert received.path == path
    assert received.headers["authorization"] == f"Bearer {value}"
    assert full not in repr(received.headers)
    assert received.body["model"] == "gpt-upstream"
    assert value not in gateway.log()


@pytest.mark.usefixtures("loopback_allowed")
@end_to_end
def test_it_never_holds_the_upstream_key_in_clear_in_redis(
    recorder: ScriptedUpstream,
    gateways: Callable[..., Process],
    redis_prefix: str,
    run_names: RunNames,
    raw: redis.Redis,
) -> None:
    value = upstream_value()
    tenant, full = external_tenant(recorder, value)
    gateway = gateways()
    assert post(gateway, full, "/v1/chat/completions", CHAT).status_code == 200  # usage, load figures, acks too
    assert authorizations(recorder.received) == [f"Bearer {value}"]

    stored = everything_stored(raw, run_names.key_patterns())
    section = orjson.loads(raw.hget(config_sections_key(redis_prefix), tenant_section(tenant.pk)) or b"{}")
    sealed = section["deployments"]["acme/ext"]["upstream_key"]
    assert sealed.startswith("fd1.") and any(sealed.encode() in blob for blob in stored)  # the scan saw the section
    assert [blob for blob in stored if value.encode() in blob] == []


@pytest.mark.usefixtures("loopback_allowed")
@end_to_end
def test_a_rotated_key_reaches_the_upstream_within_seconds(
    recorder: ScriptedUpstream, gateways: Callable[..., Process], run_names: RunNames, raw: redis.Redis
) -> None:
    value, rotated = upstream_value(), upstream_value()
    tenant, full = external_tenant(recorder, value)
    gateway = gateways()
    assert post(gateway, full, "/v1/chat/completions", CHAT).status_code == 200

    update_secret(TenantSecret.unscoped_objects.get(tenant=tenant, name=SECRET), value=rotated, actor=None)

    deadline = time.monotonic() + 10
    while recorder.received[-1].headers.get("authorization") != f"Bearer {rotated}":
        assert time.monotonic() < deadline, (
            f"the rotation did not reach the upstream: {authorizations(recorder.received)}"
        )
        time.sleep(0.1)
        assert post(gateway, full, "/v1/chat/completions", CHAT).status_code == 200
    assert set(authorizations(recorder.received)) == {f"Bearer {value}", f"Bearer {rotated}"}
    stored = everything_stored(raw, run_names.key_patterns())
    assert [blob for blob in stored if value.encode() in blob or rotated.encode() in blob] == []


@pytest.mark.usefixtures("loopback_allowed")
@end_to_end
def test_a_gateway_with_another_seal_key_calls_the_endpoint_without_a_key(
    recorder: ScriptedUpstream, gateways: Callable[..., Process], redis_prefix: str
) -> None:
    """The key does not open there: the gateway warns, naming the deployment, and calls the endpoint without an
    Authorization header; what the endpoint answers (here 200, usually 401, a 502 for the client) decides."""
    value = upstream_value()
    _, full = external_tenant(recorder, value)
    stranger = gateways(FRONTDOOR_SEAL_KEY=new_key())
    wait_for_version(stranger, current_version(get_redis(), redis_prefix))

    response = post(stranger, full, "/v1/chat/completions", CHAT)

    assert response.status_code == 200, response.text
    [received] = recorder.received
    assert "authorization" not in received.headers
    log = stranger.log()
    assert "deployment acme/ext: upstream key left out" in log and "not among the keys given" in log
    assert value not in log


# --- the publisher ----------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("loopback_allowed")
@pytest.mark.django_db(transaction=True)
def test_the_publisher_seals_every_key_in_one_query_and_rewrites_nothing_unchanged(
    recorder: ScriptedUpstream, redis_prefix: str
) -> None:
    values = {slug: upstream_value() for slug in ("acme", "globex", "initech")}
    tenants = {slug: external_tenant(recorder, value, slug)[0] for slug, value in values.items()}
    sealer = Sealer.from_text(django_settings.FRONTDOOR_SEAL_KEY)

    with CaptureQueriesContext(connection) as queries:
        snapshot = build_snapshot()

    reads = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("SELECT")]
    assert len(reads) == 5, reads  # keys, tenants, deployments, revisions, and every upstream key's secret
    for slug, value in values.items():
        sealed = snapshot["deployments"][f"{slug}/ext"]["upstream_key"]
        assert value not in sealed
        assert sealer.unseal(sealed, upstream_key_context(slug, "ext")) == value
    published = publish_sections(get_redis(), [tenant.pk for tenant in tenants.values()])
    assert published.stored and published.changed == 0  # deterministic seals: the same bytes as the last publish


@pytest.mark.usefixtures("loopback_allowed")
@pytest.mark.django_db(transaction=True)
def test_naming_another_secret_republishes_the_deployments_key(recorder: ScriptedUpstream, raw: redis.Redis) -> None:
    value, other = upstream_value(), upstream_value()
    tenant, _ = external_tenant(recorder, value)
    create_secret(tenant, name="other-key", value=other, actor=None)
    sealer = Sealer.from_text(django_settings.FRONTDOOR_SEAL_KEY)

    update_deployment(
        ModelDeployment.unscoped_objects.get(tenant=tenant, name="ext"),
        {"upstream_key_secret": "other-key"},
        actor=None,
    )

    document = read_document(raw, django_settings.FRONTDOOR_REDIS_PREFIX)
    assert document is not None
    sealed = document["deployments"]["acme/ext"]["upstream_key"]
    assert sealer.unseal(sealed, upstream_key_context("acme", "ext")) == other


@pytest.mark.usefixtures("loopback_allowed")
@pytest.mark.django_db(transaction=True)
def test_the_publisher_leaves_the_key_out_without_a_seal_key(
    recorder: ScriptedUpstream, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    value = upstream_value()
    external_tenant(recorder, value)
    settings.FRONTDOOR_SEAL_KEY = ""

    with caplog.at_level(logging.WARNING, logger="frontdoor.quotas.publish"):
        snapshot = build_snapshot()

    assert "upstream_key" not in snapshot["deployments"]["acme/ext"]
    assert "deployment acme/ext: upstream key left out: no FRONTDOOR_SEAL_KEY" in caplog.text
    assert value not in caplog.text


@pytest.mark.usefixtures("loopback_allowed")
@pytest.mark.django_db(transaction=True)
def test_the_publisher_never_seals_a_key_an_http_header_cannot_carry(
    recorder: ScriptedUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    value = upstream_value()
    tenant, _ = external_tenant(recorder, value)
    # The API refuses such a value for an upstream key; a row written past it (by hand, or before the rule) is
    # still never sealed into the snapshot.
    secret = TenantSecret.unscoped_objects.get(tenant=tenant, name=SECRET)
    secret.sealed_value = at_rest_sealer().seal(f"{value}\r\nx-injected: 1", context("secret", tenant.pk, SECRET))
    secret.save(update_fields=["sealed_value"])

    with caplog.at_level(logging.WARNING, logger="frontdoor.quotas.publish"):
        snapshot = build_snapshot()

    assert "upstream_key" not in snapshot["deployments"]["acme/ext"]
    assert "deployment acme/ext: upstream key left out: secret 'openai-key' cannot be sent" in caplog.text
    assert value not in caplog.text
    assert ModelDeployment.unscoped_objects.filter(tenant=tenant, upstream_key_secret=SECRET).exists()


# --- the transports ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", [UpstreamPool, LibraryTransport], ids=["hand-written", "library"])
def test_both_transports_send_the_key_only_when_given(
    transport: Callable[[], UpstreamTransport], recorder: ScriptedUpstream
) -> None:
    policy = AddressPolicy(allowed_networks=parse_networks(["127.0.0.0/8"]))
    destination = pinned_destination(policy.check_url(recorder.url))
    value = upstream_value()

    async def scenario() -> list[int]:
        client = transport()
        statuses = []
        try:
            for bearer in (value, ""):
                response = await client.send(destination, "/v1/chat/completions", b"{}", "rid", 2, bearer)
                await response.read()
                response.release()
                statuses.append(response.status)
        finally:
            await client.aclose()
        return statuses

    assert asyncio.run(scenario()) == [200, 200]
    assert authorizations(recorder.received) == [f"Bearer {value}", None]
