"""The gateway's config snapshot store: loads the snapshot from Redis at start, reloads it on every notice.

The control plane stores the snapshot in sections (one per tenant, one for the platform's ``network``), an index of
the version that last wrote each, and the snapshot's version, and publishes on the installation's config channel
(``<prefix>:db<N>:config:notify``); ``controlplane.contracts.snapshot`` owns the storage and the document's shape,
``controlplane.contracts.redis_names`` the names, ``gateway.snapshot_index`` the in-memory index. We load at start,
reload on every notice, and poll the version every second so a lost pub/sub message costs at most a second. A
reload reads the index, fetches only the sections that changed since the last one, and parses and composes them in
a worker thread: a tenant with 100,000 keys never stalls the event loop. Until a first snapshot is loaded
(``SnapshotStore.loaded``) the gateway knows no key at all: it answers 503, never 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from controlplane.contracts import snapshot as contract
from controlplane.contracts.addresses import Address
from controlplane.contracts.redis_names import config_index_key, config_sections_key, config_version_key
from controlplane.contracts.sealing import Sealer
from gateway.snapshot_index import MALFORMED, SectionEntry, Snapshot, compose_snapshot, parse_section

log = logging.getLogger("frontdoor.gateway.snapshot")


@dataclass(frozen=True, slots=True)
class CachedSection:
    """What a store holds of one section between reloads."""

    # The version the index listed when it was last fetched. The bytes fetched may be newer (a publish came between
    # the index read and the fetch), never older: at worst the next index lists a newer version and the same bytes
    # are fetched again. A section that did not parse is fetched again only once a publish rewrote it.
    version: int
    parsed: SectionEntry | None  # the newest version that parsed; None when none did (it is left out)


def _parse_fetched(
    name: str, listed: int, raw: bytes, previous: CachedSection | None, sealer: Sealer | None
) -> CachedSection:
    """A fetched section, parsed; a malformed one keeps the previous version that parsed (or none: fail closed)."""
    try:
        doc: Mapping[str, Any] = contract.decode_section(raw)
        if not isinstance(doc, dict):
            raise TypeError(f"a section is a JSON object, not {type(doc).__name__}")
        parsed = parse_section(doc, sealer)
    except MALFORMED as exc:
        kept = previous.parsed if previous is not None else None
        outcome = "keeping the version parsed before" if kept is not None else "leaving it out"
        log.error("snapshot: section %s (version %s) is malformed, %s: %r", name, listed, outcome, exc)
        return CachedSection(version=listed, parsed=kept)
    return CachedSection(version=listed, parsed=parsed)


def _rebuild(
    version: int,
    kept: dict[str, CachedSection],
    fetched: dict[str, tuple[int, bytes]],
    local_services: frozenset[tuple[Address, int]],
    sealer: Sealer | None = None,
) -> tuple[dict[str, CachedSection], Snapshot]:
    """Parse the fetched sections (name -> (version the index listed, encoded)) and compose the snapshot with the
    kept ones. Pure: it runs in a worker thread, the store swaps the result in on the event loop."""
    sections = dict(kept)
    for name, (listed, raw) in fetched.items():
        sections[name] = _parse_fetched(name, listed, raw, sections.get(name), sealer)
    parsed = (sections[name].parsed for name in sorted(sections))
    return sections, compose_snapshot(version, (p for p in parsed if p is not None), local_services)


# A load this large (encoded bytes fetched) makes enough objects that collecting them would stall the loop.
LARGE_LOAD_BYTES = 4 * 1024 * 1024


@contextlib.contextmanager
def _collector_paused(large: bool) -> Iterator[None]:
    """No garbage collection while a load parses in its thread: the collector holds the interpreter lock, and a full
    collection over a large snapshot's objects would stop the event loop for as long as it scans them.

    After a large load everything alive is frozen (``gc.freeze``): the snapshot's entries are long-lived and acyclic
    (reference counting frees them once replaced), so scanning them again in every later full collection would only
    cost the loop time. What freezing also catches, cyclic garbage not collected yet, is small and left in place.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
    if large:
        gc.freeze()


class SnapshotStore:
    """Holds the current snapshot, reloads it from Redis, and wakes waiters on every change."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        channel: str,
        local_services: frozenset[tuple[Address, int]] = frozenset(),
        sealer: Sealer | None = None,
    ) -> None:
        """``channel``: the installation's config notice channel (``controlplane.contracts.redis_names``);
        ``sealer``: what opens the upstream keys sealed in the snapshot (``GatewayConfig.sealer``)."""
        self.redis = redis
        self.local_services = local_services
        self.sealer = sealer
        self.sections_key = config_sections_key(prefix)
        self.index_key = config_index_key(prefix)
        self.version_key = config_version_key(prefix)
        self.channel = channel
        self.current = Snapshot.empty(local_services)
        self.sections: dict[str, CachedSection] = {}  # what ``current`` was composed of, by section name
        self._changed = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self.on_change: list[Any] = []  # callables run after every swap (e.g. clear the auth cache)

    @property
    def loaded(self) -> bool:
        """Whether a snapshot was ever loaded: published versions start at 1, the empty stand-in is version 0."""
        return self.current.version > 0

    async def reload(self) -> bool:
        """Fetch the sections that changed and swap in the snapshot when the stored one is newer; True when it did."""
        async with self._reload_lock:
            version, index = await self._read_index()
            if version <= self.current.version:
                return False
            kept = {name: cached for name, cached in self.sections.items() if name in index}
            stale = contract.stale_sections(index, {name: cached.version for name, cached in kept.items()})
            fetched = await self._fetch(stale)
            for name in stale:
                if name not in fetched:  # removed since the index was read: a newer version has it no more
                    kept.pop(name, None)
            if not fetched and kept.keys() == self.sections.keys():
                snap = dataclasses.replace(self.current, version=version)  # a publish that changed nothing here
            else:
                to_parse = {name: (index[name], raw) for name, raw in fetched.items()}
                with _collector_paused(large=sum(len(raw) for raw in fetched.values()) >= LARGE_LOAD_BYTES):
                    kept, snap = await asyncio.to_thread(
                        _rebuild, version, kept, to_parse, self.local_services, self.sealer
                    )
            self.sections = kept
            self._swap(snap)
            return True

    async def _read_index(self) -> tuple[int, dict[str, int]]:
        """The stored version and each section's version, in one ``MULTI`` (``contract.read_index``, async)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.get(self.version_key)
        pipe.hgetall(self.index_key)
        raw_version, raw_index = await pipe.execute()
        return int(raw_version or 0), contract.parse_index(raw_index)

    async def _fetch(self, names: list[str]) -> dict[str, bytes]:
        """The named sections, encoded (``contract.read_sections``, async); one removed meanwhile is absent."""
        if not names:
            return {}
        values = await self.redis.hmget(self.sections_key, names)
        return {name: raw for name, raw in zip(names, values, strict=True) if raw is not None}

    def _swap(self, snap: Snapshot) -> None:
        self.current = snap
        for callback in self.on_change:
            callback(snap)
        # Wake every request held for a cold deployment; each re-checks its deployment.
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for_change(self, wait_s: float) -> None:
        """Sleep until the next snapshot swap, or the timeout."""
        event = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), wait_s)

    async def poll_version_forever(self, interval_s: float = 1.0) -> None:
        """Safety net for lost notices: compare the stored version with ours every second."""
        while True:
            try:
                raw = await self.redis.get(self.version_key)
                if raw is not None and int(raw) > self.current.version:
                    await self.reload()
            except (RedisError, OSError, ValueError) as exc:
                log.warning("snapshot version poll failed: %s", exc)
            await asyncio.sleep(interval_s)

    async def listen_forever(self) -> None:
        """Reload on every pub/sub notice; reconnect with a short backoff when Redis goes away."""
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                # Catch up on anything published while we were not subscribed.
                await self.reload()
                while True:
                    message = await pubsub.get_message(timeout=30.0)
                    if message is not None:
                        await self.reload()
            except (RedisError, OSError, ValueError) as exc:
                log.warning("snapshot listener lost Redis: %s", exc)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[attr-defined]
