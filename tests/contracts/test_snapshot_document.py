"""The config snapshot document round-trips: written by the contract's writer, read back by the gateway's own store.

Every field of ``controlplane.contracts.snapshot``'s document is set here to a value that differs from the default a
reader would fall back to, so a field the writer and the gateway's parser spell differently fails a comparison below.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis

from controlplane.contracts import drain
from controlplane.contracts.redis_names import (
    CONFIG_NOTIFY,
    channel,
    config_version_key,
)
from controlplane.contracts.snapshot import (
    PLATFORM_SECTION,
    DeploymentDoc,
    KeyDoc,
    NetworkDoc,
    TenantDoc,
    allocate_version,
    publish_document,
    read_document,
    read_index,
    store_sections,
    tenant_section,
)
from gateway.limits import Limits
from gateway.snapshot import SnapshotStore
from gateway.snapshot_index import Snapshot

KEYS: dict[str, KeyDoc] = {
    "ab12cd34": {
        "id": 7,
        "env": "test",
        "hash": "0f" * 32,
        "tenant": "acme",
        "scopes": ["inference", "read"],
        "expires_at": 1767225600.5,
        "revoked": True,
        "limits": {"requests_per_minute": 60, "tokens_per_minute": 6000, "max_concurrent_requests": 3},
    }
}
TENANTS: dict[str, TenantDoc] = {
    "acme": {
        "id": 3,
        "status": "active",
        "limits": {
            "requests_per_minute": 600,
            "tokens_per_minute": 100_000,
            "max_concurrent_requests": 32,
            "monthly_token_budget": 10_000_000,
        },
    },
    "beta": {
        "id": 4,
        "status": "suspended",
        "limits": {
            "requests_per_minute": None,
            "tokens_per_minute": None,
            "max_concurrent_requests": None,
            "monthly_token_budget": None,
        },
    },
}
DEPLOYMENTS: dict[str, DeploymentDoc] = {
    "acme/chat-small": {
        "id": 9,
        "tenant": "acme",
        "name": "chat-small",
        "model": "frontdoor/sim-chat",
        "runtime": "builtin",
        "state": "running",
        "min_replicas": 0,
        "max_replicas": 4,
        "max_concurrent_requests": 64,
        "timeout_s": 120,
        "created": 1764201600,
        "revisions": [
            {"id": 11, "name": "r1", "weight": 80, "model": "frontdoor/sim-chat", "endpoints": ["http://127.0.0.1:40123/"]},
            {"id": 12, "name": "r2", "weight": 20, "model": "frontdoor/sim-chat-v2", "endpoints": []},
        ],
    },
    "acme/outside": {
        "id": 10,
        "tenant": "acme",
        "name": "outside",
        "model": "gpt-x",
        "runtime": "external",
        "state": "running",
        "min_replicas": 1,
        "max_replicas": 1,
        "max_concurrent_requests": None,
        "timeout_s": 30,
        "created": 1764201601,
        "revisions": [{"id": 13, "name": "r1", "weight": 100, "model": "gpt-x", "endpoints": ["http://10.0.0.5:8000"]}],
    },
    "acme/leaving": {
        "id": 14,
        "tenant": "acme",
        "name": "leaving",
        "model": "m",
        "runtime": "builtin",
        "state": "deleting",
        "min_replicas": 0,
        "max_replicas": 1,
        "max_concurrent_requests": None,
        "timeout_s": 30,
        "created": 1764201602,
        "revisions": [{"id": 15, "name": "r1", "weight": 100, "model": "m", "endpoints": ["http://127.0.0.1:40999"]}],
    },
}
NETWORK: NetworkDoc = {"allowed_networks": ["10.0.0.0/8"], "platform_services": [["127.0.0.1", 6379]]}


@pytest.fixture
def client(redis_url: str, redis_prefix: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def _load_in_the_gateway(redis_url: str, prefix: str) -> Snapshot:
    async def load() -> Snapshot:
        async_client = aioredis.Redis.from_url(redis_url)
        try:
            store = SnapshotStore(async_client, prefix, channel(prefix, redis_url, CONFIG_NOTIFY))
            assert await store.reload()
            return store.current
        finally:
            await async_client.aclose()  # type: ignore[attr-defined]  # types-redis predates aclose

    return asyncio.run(load())


def test_it_stores_the_document_with_its_version_and_notifies(
    client: redis.Redis, redis_url: str, redis_prefix: str
) -> None:
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel(redis_prefix, redis_url, CONFIG_NOTIFY))
    try:
        version = publish_document(client, redis_prefix, KEYS, TENANTS, DEPLOYMENTS, NETWORK)
        message = None
        deadline = time.monotonic() + 5
        while message is None and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.2)
    finally:
        pubsub.close()

    stored = read_document(client, redis_prefix)
    assert stored is not None
    assert int(client.get(config_version_key(redis_prefix)) or 0) == version == stored["version"]
    # One section per tenant (by id), one for the platform, each written by this version.
    assert read_index(client, redis_prefix) == (
        version,
        {tenant_section(3): version, tenant_section(4): version, PLATFORM_SECTION: version},
    )
    assert (stored["keys"], stored["tenants"], stored["deployments"], stored["network"]) == (
        KEYS,
        TENANTS,
        DEPLOYMENTS,
        NETWORK,
    )
    assert message is not None and message["data"] == str(version).encode()


def test_the_gateway_reads_every_field_the_writer_wrote(client: redis.Redis, redis_url: str, redis_prefix: str) -> None:
    version = publish_document(client, redis_prefix, KEYS, TENANTS, DEPLOYMENTS, NETWORK)

    snap = _load_in_the_gateway(redis_url, redis_prefix)

    assert snap.version == version
    key = snap.keys["ab12cd34"]
    assert (key.id, key.key_id, key.env, key.hash, key.tenant) == (7, "ab12cd34", "test", "0f" * 32, "acme")
    assert (key.scopes, key.expires_at, key.revoked) == (frozenset({"inference", "read"}), 1767225600.5, True)
    assert key.limits == Limits(requests_per_minute=60, tokens_per_minute=6000, max_concurrent_requests=3)
    acme, beta = snap.tenants["acme"], snap.tenants["beta"]
    assert (acme.id, acme.slug, acme.active, beta.active) == (3, "acme", True, False)
    assert acme.limits == Limits(600, 100_000, 32, 10_000_000)
    assert beta.limits == Limits()
    chat = snap.deployments[("acme", "chat-small")]
    assert (chat.id, chat.tenant, chat.name, chat.model, chat.state) == (
        9,
        "acme",
        "chat-small",
        "frontdoor/sim-chat",
        "running",
    )
    assert (chat.max_concurrent, chat.timeout_s, chat.created, chat.min_replicas, chat.external) == (
        64,
        120.0,
        1764201600,
        0,
        False,
    )
    assert [(r.id, r.name, r.weight, r.model, r.endpoints, r.tenant_given) for r in chat.revisions] == [
        (11, "r1", 80, "frontdoor/sim-chat", ("http://127.0.0.1:40123",), False),
        (12, "r2", 20, "frontdoor/sim-chat-v2", (), False),
    ]
    outside = snap.deployments[("acme", "outside")]
    assert outside.external and outside.min_replicas == 1 and outside.revisions[0].tenant_given
    assert ("acme", "leaving") not in snap.deployments  # a deployment being deleted is not routed to
    assert [d.name for d in snap.by_tenant["acme"]] == ["chat-small", "outside"]
    assert [str(n) for n in snap.address_policy.allowed_networks] == ["10.0.0.0/8"]
    assert {(str(a), p) for a, p in snap.address_policy.platform_services} == {("127.0.0.1", 6379)}


def test_the_backends_see_the_endpoints_the_gateway_routes_to(
    client: redis.Redis, redis_url: str, redis_prefix: str
) -> None:
    publish_document(client, redis_prefix, KEYS, TENANTS, DEPLOYMENTS, NETWORK)

    snap = _load_in_the_gateway(redis_url, redis_prefix)
    stored = read_document(client, redis_prefix)
    assert stored is not None

    routed = {e for d in snap.deployments.values() for r in d.revisions for e in r.endpoints}
    assert drain.routed_endpoints(stored) == routed == {"http://127.0.0.1:40123", "http://10.0.0.5:8000"}


def test_it_never_stores_an_older_version_over_a_newer_one(client: redis.Redis, redis_prefix: str) -> None:
    older, newer = allocate_version(client, redis_prefix), allocate_version(client, redis_prefix)
    notify = channel(redis_prefix, "redis://127.0.0.1:6379/0", CONFIG_NOTIFY)

    assert store_sections(client, redis_prefix, newer, {"tenant:1": b'{"keys": {}}'}, (), notify).stored
    assert not store_sections(client, redis_prefix, older, {"tenant:1": b'{"keys": {"old": {}}}'}, (), notify).stored
    assert read_index(client, redis_prefix) == (newer, {"tenant:1": newer})
    assert publish_document(client, redis_prefix, {}, {}, {}) > newer
    assert read_index(client, redis_prefix)[1] == {}  # a whole document replaces every section


def test_a_section_that_did_not_change_keeps_its_version(client: redis.Redis, redis_prefix: str) -> None:
    notify = channel(redis_prefix, "redis://127.0.0.1:6379/0", CONFIG_NOTIFY)
    first, second = allocate_version(client, redis_prefix), allocate_version(client, redis_prefix)
    store_sections(client, redis_prefix, first, {"tenant:1": b'{"keys": {}}', "tenant:2": b'{"keys": {}}'}, (), notify)

    result = store_sections(
        client, redis_prefix, second, {"tenant:1": b'{"keys": {}}', "tenant:2": b'{"keys": {"k": {}}}'}, (), notify
    )

    assert result.stored and result.changed == 1
    assert read_index(client, redis_prefix) == (second, {"tenant:1": first, "tenant:2": second})
