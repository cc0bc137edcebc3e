"""The gateway's config snapshot: the document's shape, where it is stored, and the one way to store it.

The control plane (``controlplane.snapshot.publisher``) builds the document from Postgres; the gateway
(``gateway.snapshot``) parses it; the backends read its routed endpoints (``controlplane.contracts.drain``);
benchmarks and tests build one by hand. All of them use the types and the writer below. docs/contracts.md
("Config snapshot") describes every field.

Storage (key names in ``controlplane.contracts.redis_names``):

- ``<prefix>:config:snapshot``: the document, JSON, replaced whole with ``SET``;
- ``<prefix>:config:version``: the stored document's ``version``, set by the same Lua script, only when newer;
- ``<prefix>:config:seq``: the counter versions are allocated from (``allocate_version``), before a publisher
  reads what it will publish, so a publisher that read earlier can never overwrite one that read later;
- a ``PUBLISH`` of the version on the installation's ``config:notify`` channel, from the same script.

So ``config:version`` only ever moves together with the snapshot: a gateway never sees a version with no snapshot
behind it. The document has no format version of its own (``version`` numbers publications): fields are only ever
added, and a reader gives an absent one its old meaning (``env`` absent is ``"live"``, ``network`` absent allows
public addresses only). Django-free, so that the gateway, the benchmarks and the tests import it.
"""

from __future__ import annotations

import time
from typing import Any, NotRequired, TypedDict, cast

import orjson
import redis

from controlplane.contracts.redis_names import (
    CONFIG_NOTIFY,
    channel_in_db,
    config_seq_key,
    config_snapshot_key,
    config_version_key,
)

# The limit names of a key's and a tenant's ``limits`` (a tenant has a monthly budget besides); null is unlimited.
KEY_LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute", "max_concurrent_requests")
TENANT_LIMIT_FIELDS = (*KEY_LIMIT_FIELDS, "monthly_token_budget")

DEFAULT_KEY_ENV = "live"  # the environment of a key published without one
EXTERNAL_RUNTIME = "external"  # a deployment whose endpoints its tenant typed (checked against ``network``)
DELETING = "deleting"  # a deployment ``state`` the gateway no longer routes to
ACTIVE = "active"  # the tenant ``status`` whose keys authenticate


class Limits(TypedDict):
    requests_per_minute: int | None
    tokens_per_minute: int | None
    max_concurrent_requests: int | None
    monthly_token_budget: NotRequired[int | None]  # tenants only


class KeyDoc(TypedDict):
    """An API key, under its public ``key_id``."""

    id: int  # the ApiKey primary key (usage events name it)
    env: NotRequired[str]  # the environment segment it was issued with; absent means DEFAULT_KEY_ENV
    hash: str  # hex HMAC-SHA256(pepper, secret)
    tenant: str  # tenant slug
    scopes: list[str]
    expires_at: float | None  # epoch seconds
    revoked: bool
    limits: Limits


class TenantDoc(TypedDict):
    """A tenant, under its slug."""

    id: int
    status: str  # ACTIVE, or "suspended": every key refused
    limits: Limits


class RevisionDoc(TypedDict):
    """A routed revision (weight > 0) of a deployment."""

    id: int
    name: str  # "r<number>"
    weight: int
    model: NotRequired[str]  # the model id its replicas serve; absent means the deployment's
    endpoints: list[str]  # replica base URLs


class DeploymentDoc(TypedDict):
    """A deployment, under ``"<tenant slug>/<name>"``; its name is the OpenAI ``model``."""

    id: int
    tenant: str
    name: str
    model: str  # the upstream model id sent to the replicas
    runtime: str
    state: str  # desired state: running | stopped | deleting
    min_replicas: int
    max_replicas: int
    max_concurrent_requests: int | None  # across every gateway process; null is unlimited
    timeout_s: float
    created: int  # epoch seconds
    revisions: list[RevisionDoc]


class NetworkDoc(TypedDict):
    """The address policy for tenant-given endpoints."""

    allowed_networks: list[str]  # CIDRs
    platform_services: list[list[Any]]  # [address, port] pairs, resolved


class SnapshotDocument(TypedDict):
    version: int
    published_at: float  # epoch seconds
    keys: dict[str, KeyDoc]
    tenants: dict[str, TenantDoc]
    deployments: dict[str, DeploymentDoc]
    network: NotRequired[NetworkDoc]


def deployment_key(tenant_slug: str, name: str) -> str:
    """The document's key of a deployment."""
    return f"{tenant_slug}/{name}"


def encode_document(document: SnapshotDocument) -> bytes:
    return orjson.dumps(document)


def decode_document(raw: bytes | str) -> SnapshotDocument:
    """The stored document as its writer wrote it (``orjson`` errors on bytes that are not JSON)."""
    return cast(SnapshotDocument, orjson.loads(raw))


# KEYS: seq, version. Allocate the next version; never at or below the stored one (e.g. seq lost).
_ALLOCATE_LUA = """
local v = redis.call('INCR', KEYS[1])
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if v <= current then
  v = current + 1
  redis.call('SET', KEYS[1], v)
end
return v
"""

# KEYS: snapshot, version. ARGV: version, document, channel. Store only when newer; 1 if stored.
_STORE_LUA = """
local new = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if new <= current then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 1
"""


def allocate_version(client: redis.Redis, prefix: str) -> int:
    """The next snapshot version: above every version allocated or stored before."""
    keys = (config_seq_key(prefix), config_version_key(prefix))
    return int(client.eval(_ALLOCATE_LUA, 2, *keys))  # type: ignore[arg-type]


def store_snapshot(client: redis.Redis, prefix: str, version: int, document: bytes, notify_channel: str) -> bool:
    """Store the document, set the version and PUBLISH it on ``notify_channel``, atomically, only if ``version`` is
    newer than the stored one; True if stored. ``document`` is the encoded document, whose ``version`` is ``version``.
    """
    keys = (config_snapshot_key(prefix), config_version_key(prefix))
    stored = client.eval(_STORE_LUA, 2, *keys, version, document, notify_channel)  # type: ignore[arg-type]
    return bool(stored)


def config_channel(client: redis.Redis, prefix: str) -> str:
    """The config notice channel of the installation ``prefix`` on the database ``client`` selects."""
    return channel_in_db(prefix, int(client.get_connection_kwargs().get("db") or 0), CONFIG_NOTIFY)


def publish_document(
    client: redis.Redis,
    prefix: str,
    keys: dict[str, KeyDoc],
    tenants: dict[str, TenantDoc],
    deployments: dict[str, DeploymentDoc],
    network: NetworkDoc | None = None,
    *,
    notify_channel: str | None = None,
) -> int:
    """Publish a document built without Postgres (benchmarks, tests) as a new version; returns the version.

    The same allocation and store script as the control plane's publisher. ``notify_channel`` defaults to the
    installation's config channel; a test that wants a notice lost passes a channel nobody listens on.
    """
    version = allocate_version(client, prefix)
    document: SnapshotDocument = {
        "version": version,
        "published_at": time.time(),
        "keys": keys,
        "tenants": tenants,
        "deployments": deployments,
    }
    if network is not None:
        document["network"] = network
    channel = notify_channel if notify_channel is not None else config_channel(client, prefix)
    store_snapshot(client, prefix, version, encode_document(document), channel)
    return version
