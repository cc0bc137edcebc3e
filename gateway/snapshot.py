"""The in-memory config snapshot (keys, tenants, deployments, endpoints) and its reload from Redis.

The control plane writes ``<prefix>:config:snapshot`` and ``<prefix>:config:version`` and publishes on
``<prefix>:config:notify`` (docs/contracts.md). We load at start, reload on every notice, and poll the
version every second so a lost pub/sub message costs at most a second. Nothing here runs per request
except attribute reads on the frozen index.
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

from gateway.limits import Limits

log = logging.getLogger("frontdoor.gateway.snapshot")


@dataclass(frozen=True, slots=True)
class KeyEntry:
    id: int
    key_id: str
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

    @classmethod
    def empty(cls) -> Snapshot:
        return cls(version=0, keys={}, tenants={}, deployments={}, by_tenant={})


def _limits(raw: dict[str, Any] | None) -> Limits:
    raw = raw or {}
    return Limits(
        requests_per_minute=raw.get("requests_per_minute"),
        tokens_per_minute=raw.get("tokens_per_minute"),
        max_concurrent_requests=raw.get("max_concurrent_requests"),
        monthly_token_budget=raw.get("monthly_token_budget"),
    )


def _model_patterns(upstream: str, name: str) -> tuple[tuple[bytes, bytes], ...]:
    up = orjson.dumps(upstream)
    mine = orjson.dumps(name)
    return ((b'"model":' + up, b'"model":' + mine), (b'"model": ' + up, b'"model": ' + mine))


def parse_snapshot(doc: dict[str, Any]) -> Snapshot:
    """Build the lookup index from a snapshot document (docs/contracts.md "Config snapshot")."""
    keys = {
        key_id: KeyEntry(
            id=int(k["id"]),
            key_id=key_id,
            hash=str(k["hash"]),
            tenant=str(k["tenant"]),
            scopes=frozenset(k.get("scopes") or ()),
            expires_at=float(k["expires_at"]) if k.get("expires_at") is not None else None,
            revoked=bool(k.get("revoked")),
            limits=_limits(k.get("limits")),
        )
        for key_id, k in (doc.get("keys") or {}).items()
    }
    tenants = {
        slug: TenantEntry(
            id=int(t["id"]), slug=slug, active=t.get("status") == "active", limits=_limits(t.get("limits"))
        )
        for slug, t in (doc.get("tenants") or {}).items()
    }
    deployments: dict[tuple[str, str], DeploymentEntry] = {}
    by_tenant: dict[str, list[DeploymentEntry]] = {}
    for d in (doc.get("deployments") or {}).values():
        if d.get("state") == "deleting":
            continue
        deployment_model = str(d.get("model") or d["name"])
        revisions = tuple(
            RevisionEntry(
                id=int(r["id"]),
                name=str(r.get("name", "")),
                weight=int(r.get("weight") or 0),
                endpoints=tuple(str(e).rstrip("/") for e in (r.get("endpoints") or ())),
                model=str(r.get("model") or deployment_model),
                model_patterns=_model_patterns(str(r.get("model") or deployment_model), str(d["name"])),
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
        )
        deployments[(entry.tenant, entry.name)] = entry
        by_tenant.setdefault(entry.tenant, []).append(entry)
    return Snapshot(
        version=int(doc.get("version") or 0),
        keys=keys,
        tenants=tenants,
        deployments=deployments,
        by_tenant={slug: tuple(sorted(ds, key=lambda e: e.name)) for slug, ds in by_tenant.items()},
    )


class SnapshotStore:
    """Holds the current snapshot, reloads it from Redis, and wakes waiters on every change."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.snapshot_key = f"{prefix}:config:snapshot"
        self.version_key = f"{prefix}:config:version"
        self.channel = f"{prefix}:config:notify"
        self.current = Snapshot.empty()
        self._changed = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self.on_change: list[Any] = []  # callables run after every swap (e.g. clear the auth cache)

    async def reload(self) -> bool:
        """Fetch and swap in the stored snapshot when it is newer; True when it changed."""
        async with self._reload_lock:
            raw = await self.redis.get(self.snapshot_key)
            if raw is None:
                return False
            snap = parse_snapshot(orjson.loads(raw))
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
