"""The gateway's in-memory snapshot index (keys, tenants, deployments, endpoints, address policy) and how a snapshot
section becomes part of it.

``controlplane.contracts.snapshot`` owns the document and its sections; ``parse_section`` turns one section into
frozen entries, ``compose_snapshot`` unites parsed sections into the ``Snapshot`` the request path reads (entries
shared, not copied), and ``parse_snapshot`` does both for a whole document. Nothing here does I/O: the store
(``gateway.snapshot``) runs it in a worker thread. Nothing here runs per request except attribute reads on the
frozen index.

Each snapshot also yields the address policy for tenant-given endpoints (runtime ``external``): its ``network``
section (allowed networks, the platform's own listeners), this process's own listeners, and the replicas the
platform runs (every other runtime's endpoints), which no external endpoint may point at. An external deployment's
upstream key, sealed in its section, is opened here with the seal key (``GatewayConfig.sealer``), once per parse.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from controlplane.contracts import snapshot as contract
from controlplane.contracts.addresses import (
    Address,
    AddressPolicy,
    Network,
    endpoint_pairs,
    parse_address,
    parse_networks,
)
from controlplane.contracts.protocols import OPENAI
from controlplane.contracts.sealing import Sealer, SealError
from controlplane.contracts.snapshot import DEFAULT_KEY_ENV, SnapshotDocument
from gateway.limits import Limits

log = logging.getLogger("frontdoor.gateway.snapshot")

# What a section that does not have the document's shape raises while it is parsed.
MALFORMED = (KeyError, TypeError, ValueError, AttributeError)


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
    # Runtime "external": what its endpoints get as ``Authorization: Bearer``, opened from the snapshot; "" none.
    upstream_key: str = field(default="", repr=False)
    # How long a request may wait for a replica while it starts from zero; 0: the gateway's ``cold_hold_s``.
    cold_hold_s: float = 0.0
    # The batch gate (``controlplane.contracts.snapshot.DeploymentDoc``); None: no gate.
    batch_per_replica: float | None = None
    batch_replicas: int = 0
    # The API its replicas speak (``controlplane.contracts.protocols``); requests on the other one are refused.
    protocol: str = OPENAI
    image_generation: bool = False  # OpenAI protocol: it serves /v1/images/generations

    @property
    def cold(self) -> bool:
        return not any(r.endpoints for r in self.revisions)

    def hold_s(self, default_s: float) -> float:
        return self.cold_hold_s or default_s

    def batch_capacity(self) -> int | None:
        """Requests in flight below which a batch line is admitted: the spare capacity of the ready replicas, or of
        the deployment's batch share of replicas when that is larger (so batch alone scales it that far, no further).
        """
        if self.batch_per_replica is None:
            return None
        ready = sum(len(r.endpoints) for r in self.revisions)
        return math.floor(self.batch_per_replica * max(ready, self.batch_replicas) + 1e-9)


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
        return _shared_limits(None, None, None, None, None, None)
    return _shared_limits(
        raw.get("requests_per_minute"),
        raw.get("tokens_per_minute"),
        raw.get("max_concurrent_requests"),
        raw.get("monthly_token_budget"),
        raw.get("batch_requests_per_minute"),
        raw.get("batch_tokens_per_minute"),
    )


# Most keys share their limits and scopes: one frozen object each, not one per key, halves the parse of a large
# tenant and leaves the garbage collector fewer objects to scan.
@functools.lru_cache(maxsize=4096)
def _shared_limits(
    rpm: int | None,
    tpm: int | None,
    concurrent: int | None,
    budget: int | None,
    batch_rpm: int | None,
    batch_tpm: int | None,
) -> Limits:
    return Limits(
        requests_per_minute=rpm,
        tokens_per_minute=tpm,
        max_concurrent_requests=concurrent,
        monthly_token_budget=budget,
        batch_requests_per_minute=batch_rpm,
        batch_tokens_per_minute=batch_tpm,
    )


@functools.lru_cache(maxsize=4096)
def _shared_scopes(scopes: tuple[str, ...]) -> frozenset[str]:
    return frozenset(scopes)


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


def _platform_services(raw: Any) -> frozenset[tuple[Address, int]]:
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
    return frozenset(services)


@dataclass(frozen=True, slots=True)
class SectionEntry:
    """One section, parsed: everything composing a snapshot takes from it, so an unchanged section costs no work."""

    keys: dict[str, KeyEntry]
    tenants: dict[str, TenantEntry]
    deployments: dict[tuple[str, str], DeploymentEntry]
    by_tenant: dict[str, tuple[DeploymentEntry, ...]]
    # (address, port) of every endpoint of its deployments the platform runs (any runtime but external).
    replicas: frozenset[tuple[Address, int]]
    # Its ``network`` (the platform section's) as a policy without replicas; None when it has none.
    network: AddressPolicy | None = None


def _key_entry(key_id: str, k: Mapping[str, Any]) -> KeyEntry:
    return KeyEntry(
        id=int(k["id"]),
        key_id=key_id,
        # Absent in snapshots of control planes that published no environment: every key they issued is live.
        env=str(k.get("env") or DEFAULT_KEY_ENV),
        hash=str(k["hash"]),
        tenant=str(k["tenant"]),
        scopes=_shared_scopes(tuple(k.get("scopes") or ())),
        expires_at=_epoch_or_none(k.get("expires_at")),
        revoked=bool(k.get("revoked")),
        limits=_limits(k.get("limits")),
    )


def _upstream_key(d: Mapping[str, Any], sealer: Sealer | None) -> str:
    """The deployment's upstream key in clear; "" when it has none, or when it does not open (warned: the gateway
    then calls the endpoint without one, and the endpoint's refusal reaches the client as any upstream failure)."""
    sealed = d.get("upstream_key")
    if not sealed:
        return ""
    tenant, name = str(d["tenant"]), str(d["name"])
    if sealer is None:
        log.warning(
            "snapshot: deployment %s/%s: upstream key left out: the gateway has no FRONTDOOR_SEAL_KEY", tenant, name
        )
        return ""
    try:
        key = sealer.unseal(str(sealed), contract.upstream_key_context(tenant, name))
    except SealError as exc:
        log.warning("snapshot: deployment %s/%s: upstream key left out: %s", tenant, name, exc)
        return ""
    if problem := contract.upstream_key_problem(key):
        log.warning("snapshot: deployment %s/%s: upstream key left out: %s", tenant, name, problem)
        return ""
    return key


def _deployment_entry(d: Mapping[str, Any], sealer: Sealer | None = None) -> DeploymentEntry:
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
    return DeploymentEntry(
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
        upstream_key=_upstream_key(d, sealer) if external else "",
        cold_hold_s=_positive(d.get("cold_hold_s")),
        batch_per_replica=_rate(d.get("batch_per_replica")),
        batch_replicas=_count(d.get("batch_replicas")),
        # As published: one this gateway does not know matches none of its routes (refused, never misrouted).
        protocol=str(d.get("protocol") or OPENAI),
        image_generation=d.get("image_generation") is True,
    )


def _rate(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _positive(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else 0.0


def parse_section(doc: Mapping[str, Any], sealer: Sealer | None = None) -> SectionEntry:
    """Parse one section (or a whole document, which has the same maps); raises one of ``MALFORMED``.

    ``sealer`` opens the upstream keys of external deployments (``GatewayConfig.sealer``).
    """
    keys = {key_id: _key_entry(key_id, k) for key_id, k in (doc.get("keys") or {}).items()}
    tenants = {
        slug: TenantEntry(
            id=int(t["id"]), slug=slug, active=t.get("status") == contract.ACTIVE, limits=_limits(t.get("limits"))
        )
        for slug, t in (doc.get("tenants") or {}).items()
    }
    raw_deployments = list((doc.get("deployments") or {}).values())
    deployments: dict[tuple[str, str], DeploymentEntry] = {}
    by_tenant: dict[str, list[DeploymentEntry]] = {}
    for d in raw_deployments:
        if d.get("state") == contract.DELETING:
            continue
        entry = _deployment_entry(d, sealer)
        deployments[(entry.tenant, entry.name)] = entry
        by_tenant.setdefault(entry.tenant, []).append(entry)
    # Every endpoint a backend published (any runtime but external) is a replica the platform runs, deleting or not.
    platform_endpoints = [
        str(endpoint)
        for d in raw_deployments
        if d.get("runtime") != contract.EXTERNAL_RUNTIME
        for r in (d.get("revisions") or ())
        for endpoint in (r.get("endpoints") or ())
    ]
    network = doc.get("network")
    return SectionEntry(
        keys=keys,
        tenants=tenants,
        deployments=deployments,
        by_tenant={slug: tuple(sorted(ds, key=lambda e: e.name)) for slug, ds in by_tenant.items()},
        replicas=endpoint_pairs(platform_endpoints),
        network=AddressPolicy(
            allowed_networks=_allowed_networks(network.get("allowed_networks")),
            platform_services=_platform_services(network.get("platform_services")),
        )
        if isinstance(network, dict)
        else None,
    )


def compose_snapshot(
    version: int, sections: Iterable[SectionEntry], local_services: frozenset[tuple[Address, int]] = frozenset()
) -> Snapshot:
    """The snapshot of ``version``: the union of its parsed sections, the entries themselves shared, not copied.

    The address policy: the ``network`` section, our own listeners (``local_services``), the platform's replicas. A
    snapshot without ``network`` allows no private network and names no platform service but ours: non-public
    addresses stay refused all the same.
    """
    keys: dict[str, KeyEntry] = {}
    tenants: dict[str, TenantEntry] = {}
    deployments: dict[tuple[str, str], DeploymentEntry] = {}
    by_tenant: dict[str, tuple[DeploymentEntry, ...]] = {}
    replicas: set[tuple[Address, int]] = set()
    network = AddressPolicy()
    for section in sections:
        keys.update(section.keys)
        tenants.update(section.tenants)
        deployments.update(section.deployments)
        by_tenant.update(section.by_tenant)
        replicas.update(section.replicas)
        if section.network is not None:
            network = section.network
    return Snapshot(
        version=version,
        keys=keys,
        tenants=tenants,
        deployments=deployments,
        by_tenant=by_tenant,
        address_policy=AddressPolicy(
            allowed_networks=network.allowed_networks,
            platform_services=network.platform_services | local_services,
            replicas=frozenset(replicas),
        ),
    )


def parse_snapshot(
    doc: SnapshotDocument, local_services: frozenset[tuple[Address, int]] = frozenset(), sealer: Sealer | None = None
) -> Snapshot:
    """Build the lookup index from a whole snapshot document (docs/contracts.md "Config snapshot").

    ``local_services``: this process's own listeners (and its Redis), refused to tenant-given endpoints.
    """
    return compose_snapshot(int(doc.get("version") or 0), [parse_section(doc, sealer)], local_services)
