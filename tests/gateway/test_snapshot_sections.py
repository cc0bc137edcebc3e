"""The gateway loads the sectioned snapshot incrementally: a reload fetches and parses only the sections whose
version moved, off the event loop, and a section that does not parse never takes the gateway down.

Real Redis; sections are written with the contract's store script (``controlplane.contracts.snapshot``), the way
the control plane's publisher writes them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from controlplane.contracts import snapshot as contract
from controlplane.contracts.snapshot import (
    PLATFORM_SECTION,
    DeploymentDoc,
    SectionDoc,
    allocate_version,
    config_channel,
    read_document,
    store_sections,
    tenant_section,
)
from gateway import snapshot as gateway_snapshot
from gateway.snapshot import SnapshotStore
from gateway.snapshot_index import SectionEntry, Snapshot, parse_snapshot

T = TypeVar("T")
ACME, GLOBEX = tenant_section(1), tenant_section(2)
GLOBEX_REPLICA = "http://127.0.0.1:40002"
LOOPBACK = ipaddress.ip_address("127.0.0.1")


@pytest.fixture
def client(redis_url: str, redis_prefix: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def tenant_doc(slug: str, tenant_id: int, key_hash: str = "h1", endpoint: str = "http://127.0.0.1:40001") -> SectionDoc:
    """A tenant's section: the tenant, one key and one deployment routed to ``endpoint``."""
    deployment: DeploymentDoc = {
        "id": tenant_id,
        "tenant": slug,
        "name": "chat",
        "model": "m",
        "runtime": "builtin",
        "state": "running",
        "min_replicas": 1,
        "max_replicas": 1,
        "max_concurrent_requests": None,
        "timeout_s": 30,
        "created": 0,
        "revisions": [{"id": tenant_id * 10, "name": "r1", "weight": 100, "endpoints": [endpoint]}],
    }
    limits: contract.Limits = {"requests_per_minute": None, "tokens_per_minute": None, "max_concurrent_requests": None}
    return {
        "tenants": {slug: {"id": tenant_id, "status": "active", "limits": limits}},
        "keys": {
            f"{slug}-key": {
                "id": tenant_id,
                "hash": key_hash,
                "tenant": slug,
                "scopes": ["inference"],
                "expires_at": None,
                "revoked": False,
                "limits": limits,
            }
        },
        "deployments": {f"{slug}/chat": deployment},
    }


def publish(
    client: redis.Redis, prefix: str, sections: dict[str, SectionDoc | bytes], removed: tuple[str, ...] = ()
) -> int:
    """Store ``sections`` (bytes as they are) as a new version, the way the publisher stores the ones it rebuilt."""
    version = allocate_version(client, prefix)
    encoded = {name: doc if isinstance(doc, bytes) else orjson.dumps(doc) for name, doc in sections.items()}
    assert store_sections(client, prefix, version, encoded, removed, config_channel(client, prefix)).stored
    return version


def publish_world(client: redis.Redis, prefix: str) -> int:
    network: SectionDoc = {"network": {"allowed_networks": ["10.0.0.0/8"], "platform_services": []}}
    return publish(
        client,
        prefix,
        {
            ACME: tenant_doc("acme", 1),
            GLOBEX: tenant_doc("globex", 2, endpoint=GLOBEX_REPLICA),
            PLATFORM_SECTION: network,
        },
    )


class HmgetSpy:
    """Records the section names each HMGET asked for; ``before`` runs ahead of the first one."""

    def __init__(self, store: SnapshotStore, before: Callable[[], None] | None = None) -> None:
        self.real = store.redis.hmget
        self.before = before
        self.asked: list[list[str]] = []
        store.redis.hmget = self  # type: ignore[method-assign, assignment]

    async def __call__(self, key: str, names: list[str]) -> list[Any]:
        if self.before is not None:
            before, self.before = self.before, None
            before()
        self.asked.append(sorted(names))
        return await self.real(key, names)


def with_store(
    redis_url: str, client: redis.Redis, prefix: str, scenario: Callable[[SnapshotStore], Awaitable[T]]
) -> T:
    async def main() -> T:
        async_client = aioredis.Redis.from_url(redis_url)
        try:
            return await scenario(SnapshotStore(async_client, prefix, config_channel(client, prefix)))
        finally:
            await async_client.aclose()  # type: ignore[attr-defined]  # types-redis predates aclose

    return asyncio.run(main())


def test_it_composes_the_same_snapshot_as_parsing_the_whole_document(
    client: redis.Redis, redis_url: str, redis_prefix: str
) -> None:
    version = publish_world(client, redis_prefix)

    async def scenario(store: SnapshotStore) -> Snapshot:
        assert await store.reload()
        return store.current

    loaded = with_store(redis_url, client, redis_prefix, scenario)
    document = read_document(client, redis_prefix)
    assert document is not None
    assert loaded == parse_snapshot(document)
    assert loaded.version == version and set(loaded.tenants) == {"acme", "globex"}
    assert [str(n) for n in loaded.address_policy.allowed_networks] == ["10.0.0.0/8"]


def test_a_reload_after_one_tenant_changed_fetches_and_parses_only_that_tenant(
    client: redis.Redis, redis_url: str, redis_prefix: str
) -> None:
    publish_world(client, redis_prefix)

    async def scenario(store: SnapshotStore) -> None:
        assert await store.reload()
        before = store.current
        changed = publish(client, redis_prefix, {ACME: tenant_doc("acme", 1, key_hash="h2")})  # same replica
        spy = HmgetSpy(store)

        assert await store.reload()
        after = store.current
        assert spy.asked == [[ACME]]
        assert after.version == changed and after.keys["acme-key"].hash == "h2"
        # The other tenant's entries are the very objects parsed before: nothing of it was parsed again.
        assert after.keys["globex-key"] is before.keys["globex-key"]
        assert after.tenants["globex"] is before.tenants["globex"]
        assert after.by_tenant["globex"] is before.by_tenant["globex"]
        assert after.deployments[("globex", "chat")] is before.deployments[("globex", "chat")]
        assert after.address_policy == before.address_policy

        assert not await store.reload(), "no newer version: nothing to do"
        # A publish that stores a tenant's section unchanged leaves its index entry, so nothing is fetched.
        same = publish(client, redis_prefix, {GLOBEX: tenant_doc("globex", 2, endpoint=GLOBEX_REPLICA)})
        assert await store.reload()
        assert store.current.version == same and spy.asked == [[ACME]]
        assert store.current.keys is after.keys

    with_store(redis_url, client, redis_prefix, scenario)


def test_a_removed_section_leaves_the_snapshot(client: redis.Redis, redis_url: str, redis_prefix: str) -> None:
    publish_world(client, redis_prefix)

    async def scenario(store: SnapshotStore) -> None:
        assert await store.reload()
        assert (LOOPBACK, 40002) in store.current.address_policy.replicas
        removed = publish(client, redis_prefix, {}, removed=(GLOBEX,))
        spy = HmgetSpy(store)

        assert await store.reload()
        snap = store.current
        assert snap.version == removed and spy.asked == []
        assert "globex-key" not in snap.keys and "globex" not in snap.tenants
        assert "globex" not in snap.by_tenant and ("globex", "chat") not in snap.deployments
        assert GLOBEX not in store.sections and "acme-key" in snap.keys
        assert snap.address_policy.replicas == {(LOOPBACK, 40001)}, "its replicas are no longer the platform's"

    with_store(redis_url, client, redis_prefix, scenario)


def test_a_section_newer_than_the_index_is_kept_and_fetched_again_only_once_the_index_lists_it(
    client: redis.Redis, redis_url: str, redis_prefix: str
) -> None:
    publish_world(client, redis_prefix)

    async def scenario(store: SnapshotStore) -> None:
        assert await store.reload()
        listed = publish(client, redis_prefix, {ACME: tenant_doc("acme", 1, key_hash="h2")})
        newer: list[int] = []
        # Between the index read and the fetch, another publish rewrites the section.
        spy = HmgetSpy(
            store, before=lambda: newer.append(publish(client, redis_prefix, {ACME: tenant_doc("acme", 1, "h3")}))
        )

        assert await store.reload()
        assert store.current.version == listed, "the snapshot's version is the index's"
        assert store.current.keys["acme-key"].hash == "h3", "the newer bytes are kept"
        assert store.sections[ACME].version == listed < newer[0]

        # The index now lists the newer version: the section is fetched once more (the same bytes), then no more.
        assert await store.reload()
        assert store.current.version == newer[0] and spy.asked == [[ACME], [ACME]]
        assert store.sections[ACME].version == newer[0] and store.current.keys["acme-key"].hash == "h3"
        publish(client, redis_prefix, {GLOBEX: tenant_doc("globex", 2, key_hash="h2")})
        assert await store.reload()
        assert spy.asked[2:] == [[GLOBEX]]

    with_store(redis_url, client, redis_prefix, scenario)


def test_the_event_loop_keeps_running_while_sections_are_parsed(
    client: redis.Redis, redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_world(client, redis_prefix)
    parse = gateway_snapshot.parse_section
    entered, released = threading.Event(), threading.Event()
    waits: list[bool] = []

    def blocking_parse(doc: Any, *args: Any) -> SectionEntry:
        entered.set()
        waits.append(released.wait(5))  # only a coroutine on the loop sets it
        return parse(doc, *args)

    monkeypatch.setattr(gateway_snapshot, "parse_section", blocking_parse)

    async def release_once_parsing() -> None:
        while not entered.is_set():
            await asyncio.sleep(0.005)
        released.set()

    async def scenario(store: SnapshotStore) -> None:
        releaser = asyncio.create_task(release_once_parsing())
        assert await store.reload()
        await asyncio.wait_for(releaser, 5)

    with_store(redis_url, client, redis_prefix, scenario)
    assert waits and all(waits), "the parse held the event loop: the coroutine that releases it never ran"


@pytest.mark.parametrize(
    "malformed",
    [
        b"{not json",
        b"[1, 2]",
        orjson.dumps({"keys": {"acme-key": {"id": 1, "tenant": "acme"}}}),  # no hash
    ],
    ids=["bad-json", "not-an-object", "missing-field"],
)
def test_a_malformed_section_keeps_its_previous_version_and_the_others_are_served(
    client: redis.Redis, redis_url: str, redis_prefix: str, malformed: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    publish_world(client, redis_prefix)

    async def scenario(store: SnapshotStore) -> None:
        assert await store.reload()
        before = store.current
        broken = publish(
            client,
            redis_prefix,
            {ACME: malformed, GLOBEX: tenant_doc("globex", 2, key_hash="h2"), tenant_section(3): malformed},
        )

        assert await store.reload()
        snap = store.current
        assert snap.version == broken and "malformed" in caplog.text
        assert snap.keys["acme-key"] is before.keys["acme-key"], "the version parsed before is kept"
        assert snap.keys["globex-key"].hash == "h2"
        assert set(snap.tenants) == {"acme", "globex"}, "a new section that does not parse is left out"

        # Fetched again only once a publish rewrites it.
        spy = HmgetSpy(store)
        publish(client, redis_prefix, {GLOBEX: tenant_doc("globex", 2, key_hash="h3")})
        assert await store.reload()
        assert spy.asked == [[GLOBEX]]
        publish(client, redis_prefix, {ACME: tenant_doc("acme", 1, key_hash="h5")})
        assert await store.reload()
        assert spy.asked[-1] == [ACME] and store.current.keys["acme-key"].hash == "h5"

    with_store(redis_url, client, redis_prefix, scenario)
