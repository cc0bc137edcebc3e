"""The in-memory config snapshot (keys, tenants, deployments, endpoints) and its reload from Redis.

The control plane writes ``<prefix>:config:snapshot`` and ``<prefix>:config:version`` and publishes on the
installation's config channel (``<prefix>:db<N>:config:notify``); ``controlplane.contracts.snapshot`` owns the
document's shape and ``controlplane.contracts.redis_names`` the names. We load at start, reload on
every notice, and poll the version every second so a lost pub/sub message costs at most a second. Until a first
snapshot is loaded (``SnapshotStore.loaded``) the gateway knows no key at all: it answers 503, never 401. Nothing
here runs per request except attribute reads on the frozen index.

Each snapshot also yields the address policy for tenant-given endpoints (runtime ``external``): its ``network``
section (allowed networks, the platform's own listeners), this process's own listeners, and the replicas the
platform runs (every other runtime's endpoints), which no external endpoint may point at.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from controlplane.contracts import snapshot as contract
from controlplane.contracts.addresses import (
    Address,
    AddressPolicy,
    Network,
    endpoint_pairs,
    parse_address,
    parse_networks,
)
from controlplane.contracts.redis_names import config_snapshot_key, config_version_key
from controlplane.contracts.snapshot import DEFAULT_KEY_ENV, SnapshotDocument
from gateway.limits import Limits

log = logging.getLogger("frontdoor.gateway.snapshot")


@dataclass(frozen=True, slots=True)
class KeyEntry:
    id: int
    key_id: str
    # The environment segment the key was issued with (``fd_<env>_...``); presented with another one it is refused.
    env: str
    hash: str
    tenant: str
    scopes: frozenset[str]
    expires_at: float | None
    revoked: bool
    limits: Limits


@dataclass(frozen=True, slots=True)
class TenantEntry:
    id: int
    slug: str
    active: bool
    limits: Limits


@dataclass(frozen=True, slots=True)
class RevisionEntry:
    id: int
    name: str
    weight: int
    endpoints: tuple[str, ...]
    # The model id this revision's replicas serve (a canary may serve another model than the stable revision).
    model: str = ""
    model_patterns: tuple[tuple[bytes, bytes], ...] = field(default=())
    # The endpoints are URLs a tenant typed (runtime "external"): checked by the address policy at connect.
    tenant_given: bool = False


@dataclass(frozen=True, slots=True)
class DeploymentEntry:
    id: int
    tenant: str
    name: str
    model: str
    state: str
    max_concurrent: int | None
    timeout_s: float
    created: int
    revisions: tuple[RevisionEntry, ...]  # only routed ones (weight > 0)
    # Byte patterns to swap the upstream model id for the client's name in streamed chunks, without parsing.
    model_patterns: tuple[tuple[bytes, bytes], ...] = field(default=())
    external: bool = False  # runtime "external": its endpoints are tenant-given
    # 0: it scales to zero, so replicas refusing every connection mean "starting" (gateway/coldhold.py).
    min_replicas: int = 1

    @property
    def cold(self) -> bool:
        return not any(r.endpoints for r in self.revisions)


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    keys: dict[str, KeyEntry]
    tenants: dict[str, TenantEntry]
    deployments: dict[tuple[str, str], DeploymentEntry]  # (tenant slug, deployment name)
    by_tenant: dict[str, tuple[DeploymentEntry, ...]]
    # Where tenant-given endpoints may connect; the default (no "network" section) allows public addresses only.
    address_policy: AddressPolicy = field(default_factory=AddressPolicy)

    @classmethod
    def empty(cls, local_services: frozenset[tuple[Address, int]] = frozenset()) -> Snapshot:
        return cls(
            version=0,
            keys={},
            tenants={},
            deployments={},
            by_tenant={},
            address_policy=AddressPolicy(platform_services=local_services),
        )


def _limits(raw: contract.Limits | None) -> Limits:
    if raw is None:
        return Limits()
    return Limits(
        requests_per_minute=raw.get("requests_per_minute"),
        tokens_per_minute=raw.get("tokens_per_minute"),
        max_concurrent_requests=raw.get("max_concurrent_requests"),
        monthly_token_budget=raw.get("monthly_token_budget"),
    )


def _epoch_or_none(value: float | None) -> float | None:
    return float(value) if value is not None else None


def _model_patterns(upstream: str, name: str) -> tuple[tuple[bytes, bytes], ...]:
    up = orjson.dumps(upstream)
    mine = orjson.dumps(name)
    return ((b'"model":' + up, b'"model":' + mine), (b'"model": ' + up, b'"model": ' + mine))


def _allowed_networks(raw: Any) -> tuple[Network, ...]:
    networks: list[Network] = []
    for item in raw if isinstance(raw, list) else ():
        try:
            networks.extend(parse_networks([str(item)]))
        except ValueError as exc:  # fail closed: a network that does not parse allows nothing
            log.warning("snapshot: allowed network ignored: %s", exc)
    return tuple(networks)


def _platform_services(raw: Any) -> set[tuple[Address, int]]:
    services: set[tuple[Address, int]] = set()
    for item in raw if isinstance(raw, list) else ():
        address = port = None
        if isinstance(item, list) and len(item) == 2 and isinstance(item[1], int) and not isinstance(item[1], bool):
            address, port = parse_address(str(item[0])), item[1]
        if address is None or port is None:
            # The control plane publishes resolved addresses; resolving here would block the event loop.
            log.warning("snapshot: platform service %.100r ignored (not an [address, port] pair)", item)
            continue
        services.add((address, port))
    return services


def address_policy(doc: SnapshotDocument, local_services: frozenset[tuple[Address, int]]) -> AddressPolicy:
    """The policy for tenant-given endpoints: the ``network`` section, our own listeners, the platform's replicas.

    A snapshot without ``network`` allows no private network and names no platform service but ours: non-public
    addresses stay refused all the same.
    """
    network = doc.get("network")
    if not isinstance(network, dict):
        network = {"allowed_networks": [], "platform_services": []}
    # Every endpoint a backend published (any runtime but external) is a replica the platform runs.
    platform_endpoints = [
        str(endpoint)
        for d in (doc.get("deployments") or {}).values()
        if d.get("runtime") != contract.EXTERNAL_RUNTIME
        for r in (d.get("revisions") or ())
        for endpoint in (r.get("endpoints") or ())
    ]
    return AddressPolicy(
        allowed_networks=_allowed_networks(network.get("allowed_networks")),
        platform_services=frozenset(_platform_services(network.get("platform_services")) | local_services),
        replicas=endpoint_pairs(platform_endpoints),
    )


def parse_snapshot(doc: SnapshotDocument, local_services: frozenset[tuple[Address, int]] = frozenset()) -> Snapshot:
    """Build the lookup index from a snapshot document (docs/contracts.md "Config snapshot").

    ``local_services``: this process's own listeners (and its Redis), refused to tenant-given endpoints.
    """
    keys = {
        key_id: KeyEntry(
            id=int(k["id"]),
            key_id=key_id,
            # Absent in snapshots of control planes that published no environment: every key they issued is live.
            env=str(k.get("env") or DEFAULT_KEY_ENV),
            hash=str(k["hash"]),
            tenant=str(k["tenant"]),
            scopes=frozenset(k.get("scopes") or ()),
            expires_at=_epoch_or_none(k.get("expires_at")),
            revoked=bool(k.get("revoked")),
            limits=_limits(k.get("limits")),
        )
        for key_id, k in (doc.get("keys") or {}).items()
    }
    tenants = {
        slug: TenantEntry(
            id=int(t["id"]), slug=slug, active=t.get("status") == contract.ACTIVE, limits=_limits(t.get("limits"))
        )
        for slug, t in (doc.get("tenants") or {}).items()
    }
    deployments: dict[tuple[str, str], DeploymentEntry] = {}
    by_tenant: dict[str, list[DeploymentEntry]] = {}
    for d in (doc.get("deployments") or {}).values():
        if d.get("state") == contract.DELETING:
            continue
        deployment_model = str(d.get("model") or d["name"])
        external = d.get("runtime") == contract.EXTERNAL_RUNTIME
        revisions = tuple(
            RevisionEntry(
                id=int(r["id"]),
                name=str(r.get("name", "")),
                weight=int(r.get("weight") or 0),
                endpoints=tuple(str(e).rstrip("/") for e in (r.get("endpoints") or ())),
                model=str(r.get("model") or deployment_model),
                model_patterns=_model_patterns(str(r.get("model") or deployment_model), str(d["name"])),
                tenant_given=external,
            )
            for r in (d.get("revisions") or ())
            if int(r.get("weight") or 0) > 0
        )
        entry = DeploymentEntry(
            id=int(d["id"]),
            tenant=str(d["tenant"]),
            name=str(d["name"]),
            model=deployment_model,
            state=str(d.get("state", "running")),
            max_concurrent=d.get("max_concurrent_requests"),
            timeout_s=float(d.get("timeout_s") or 0),
            created=int(d.get("created") or 0),
            revisions=revisions,
            model_patterns=_model_patterns(deployment_model, str(d["name"])),
            external=external,
            min_replicas=int(d["min_replicas"]) if d.get("min_replicas") is not None else 1,
        )
        deployments[(entry.tenant, entry.name)] = entry
        by_tenant.setdefault(entry.tenant, []).append(entry)
    return Snapshot(
        version=int(doc.get("version") or 0),
        keys=keys,
        tenants=tenants,
        deployments=deployments,
        by_tenant={slug: tuple(sorted(ds, key=lambda e: e.name)) for slug, ds in by_tenant.items()},
        address_policy=address_policy(doc, local_services),
    )


class SnapshotStore:
    """Holds the current snapshot, reloads it from Redis, and wakes waiters on every change."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        channel: str,
        local_services: frozenset[tuple[Address, int]] = frozenset(),
    ) -> None:
        """``channel``: the installation's config notice channel (``controlplane.contracts.redis_names``)."""
        self.redis = redis
        self.local_services = local_services
        self.snapshot_key = config_snapshot_key(prefix)
        self.version_key = config_version_key(prefix)
        self.channel = channel
        self.current = Snapshot.empty(local_services)
        self._changed = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self.on_change: list[Any] = []  # callables run after every swap (e.g. clear the auth cache)

    @property
    def loaded(self) -> bool:
        """Whether a snapshot was ever loaded: published versions start at 1, the empty stand-in is version 0."""
        return self.current.version > 0

    async def reload(self) -> bool:
        """Fetch and swap in the stored snapshot when it is newer; True when it changed."""
        async with self._reload_lock:
            raw = await self.redis.get(self.snapshot_key)
            if raw is None:
                return False
            snap = parse_snapshot(contract.decode_document(raw), self.local_services)
            if snap.version <= self.current.version:
                return False
            self.current = snap
            for callback in self.on_change:
                callback(snap)
            # Wake every request held for a cold deployment; each re-checks its deployment.
            self._changed.set()
            self._changed = asyncio.Event()
            return True

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
