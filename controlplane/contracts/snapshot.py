"""The gateway's config snapshot: the document's shape, where it is stored, and the one way to store it.

The control plane (``controlplane.snapshot.publisher``) builds the document from Postgres; the gateway
(``gateway.snapshot``) parses it; the backends read its routed endpoints (``controlplane.contracts.drain``);
benchmarks and tests build one by hand. All of them use the types and the writer below. docs/contracts.md
("Config snapshot") describes every field.

Storage (key names in ``controlplane.contracts.redis_names``). The document is stored in *sections*: one per tenant
(``tenant_section``: that tenant, its keys and its deployments) and one for the platform (``PLATFORM_SECTION``: the
address policy), so that a change to one tenant rewrites, sends and parses that tenant only:

- ``<prefix>:config:sections``: a hash of section name -> the section (``SectionDoc``), JSON;
- ``<prefix>:config:index``: a hash of section name -> the version that last wrote it (also inside the section);
- ``<prefix>:config:version``: the snapshot's version, the highest any publish stored;
- ``<prefix>:config:seq``: the counter versions are allocated from (``allocate_version``), before a publisher
  reads what it will publish, so a publisher that read earlier can never overwrite one that read later;
- a ``PUBLISH`` of the version on the installation's ``config:notify`` channel.

One Lua script (``store_sections``) writes the changed sections, their index entries and the version and publishes,
only when the version is newer than the stored one. So ``config:version`` only ever moves together with the
sections: a reader that reads the version and the index in one ``MULTI`` (``read_index``) finds sections at least as
new as that index says, and the document as a whole is the union of its sections (``compose_document``).

The document has no format version of its own (``version`` numbers publications): fields are only ever added, and a
reader gives an absent one its old meaning (``env`` absent is ``"live"``, ``network`` absent allows
public addresses only). Django-free, so that the gateway, the benchmarks and the tests import it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, NotRequired, TypedDict, cast

import orjson
import redis

from controlplane.contracts.redis_names import (
    CONFIG_NOTIFY,
    channel_in_db,
    config_index_key,
    config_sections_key,
    config_seq_key,
    config_snapshot_key,
    config_version_key,
)
from controlplane.contracts.sealing import context

# The limit names of a key's and a tenant's ``limits`` (a tenant has a monthly budget besides); null is unlimited.
KEY_LIMIT_FIELDS = (
    "requests_per_minute",
    "tokens_per_minute",
    "max_concurrent_requests",
    "batch_requests_per_minute",
    "batch_tokens_per_minute",
)
TENANT_LIMIT_FIELDS = (*KEY_LIMIT_FIELDS, "monthly_token_budget")

DEFAULT_KEY_ENV = "live"  # the environment of a key published without one
EXTERNAL_RUNTIME = "external"  # a deployment whose endpoints its tenant typed (checked against ``network``)
DELETING = "deleting"  # a deployment ``state`` the gateway no longer routes to
ACTIVE = "active"  # the tenant ``status`` whose keys authenticate


class Limits(TypedDict):
    requests_per_minute: int | None
    tokens_per_minute: int | None
    max_concurrent_requests: int | None
    # Batch lines' own windows; absent (an older publisher) or null is unlimited.
    batch_requests_per_minute: NotRequired[int | None]
    batch_tokens_per_minute: NotRequired[int | None]
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
    # Runtime "external" only: the key the gateway sends upstream as ``Authorization: Bearer``, sealed
    # deterministically with the seal key (``controlplane.contracts.sealing``) under ``upstream_key_context``, never
    # in clear. Absent: the gateway sends no Authorization header (a client's own is never forwarded).
    upstream_key: NotRequired[str]
    # Seconds a request may wait for a replica while the deployment starts from zero. Absent: the gateway's own
    # FRONTDOOR_GATEWAY_COLD_HOLD_S.
    cold_hold_s: NotRequired[int]
    # Batch lines are admitted only while the deployment's requests in flight are fewer than ``batch_per_replica``
    # (the autoscaler's target per replica) times the larger of its ready replicas and ``batch_replicas`` (its batch
    # share of max_replicas), rounded down: spare capacity first, and never so much load that the autoscaler would
    # add replicas past that share. Absent: no gate.
    batch_per_replica: NotRequired[float]
    batch_replicas: NotRequired[int]
    # The API its replicas speak (``controlplane.contracts.protocols``): "openai" or "v2". Absent: "openai". A v2
    # deployment's ``model`` (and its revisions') is the model name its replicas answer to under /v2/models/; for
    # Triton that is the deployment's own name (KServe's convention: the repository's model folder is named so).
    protocol: NotRequired[str]
    # OpenAI protocol only: its replicas serve /v1/images/generations. Absent: false.
    image_generation: NotRequired[bool]


class NetworkDoc(TypedDict):
    """The address policy for tenant-given endpoints."""

    allowed_networks: list[str]  # CIDRs
    platform_services: list[list[Any]]  # [address, port] pairs, resolved


class SectionDoc(TypedDict):
    """A part of the document: the same maps, restricted to one tenant (or the platform's ``network`` alone).

    It carries no version (the index does), so that a rebuild that changed nothing stores the same bytes.
    """

    keys: NotRequired[dict[str, KeyDoc]]
    tenants: NotRequired[dict[str, TenantDoc]]  # one entry: the section's tenant
    deployments: NotRequired[dict[str, DeploymentDoc]]
    network: NotRequired[NetworkDoc]  # the platform section only


class SnapshotDocument(TypedDict):
    version: int
    published_at: float  # epoch seconds
    keys: dict[str, KeyDoc]
    tenants: dict[str, TenantDoc]
    deployments: dict[str, DeploymentDoc]
    network: NotRequired[NetworkDoc]


PLATFORM_SECTION = "platform"  # the section with the address policy
ALL_SECTIONS = "*"  # a dirty mark that asks for every section to be rebuilt


def tenant_section(tenant_id: int | str) -> str:
    """The section of one tenant (by its primary key; a document built by hand may name it by its slug)."""
    return f"tenant:{tenant_id}"


def deployment_key(tenant_slug: str, name: str) -> str:
    """The document's key of a deployment."""
    return f"{tenant_slug}/{name}"


def upstream_key_context(tenant_slug: str, name: str) -> str:
    """What an external deployment's upstream key is sealed under: a seal copied to another deployment does not open."""
    return context("upstream", tenant_slug, name)


def upstream_key_problem(value: str) -> str:
    """Why ``value`` cannot be sent as ``Authorization: Bearer <value>`` ("" when it can).

    Visible ASCII only: a space would split the header's value, and a line break would end the header and start
    another one (on a pooled connection, another request).
    """
    if not value:
        return "it is empty"
    if not (value.isascii() and value.isprintable()) or " " in value:
        return "an HTTP header carries visible ASCII only (no spaces, line breaks or other characters)"
    return ""


def encode_document(document: SnapshotDocument) -> bytes:
    return orjson.dumps(document)


def decode_section(raw: bytes | str) -> SectionDoc:
    """A stored section as its writer wrote it (``orjson`` errors on bytes that are not JSON)."""
    return cast(SectionDoc, orjson.loads(raw))


def compose_document(version: int, sections: Iterable[SectionDoc], published_at: float = 0.0) -> SnapshotDocument:
    """The whole document: the union of its sections (each tenant's maps are disjoint from every other's)."""
    document: SnapshotDocument = {
        "version": version,
        "published_at": published_at,
        "keys": {},
        "tenants": {},
        "deployments": {},
    }
    for section in sections:
        document["keys"].update(section.get("keys") or {})
        document["tenants"].update(section.get("tenants") or {})
        document["deployments"].update(section.get("deployments") or {})
        if "network" in section:
            document["network"] = section["network"]
    return document


def split_document(document: SnapshotDocument) -> dict[str, SectionDoc]:
    """A whole document as sections: each tenant's entries under its section, the network under the platform's.

    A tenant the document lists is named by its id; one that only keys or deployments name, by its slug.
    """
    ids = {slug: tenant.get("id", slug) for slug, tenant in document["tenants"].items()}
    sections: dict[str, SectionDoc] = {}

    def section_of(slug: str) -> SectionDoc:
        name = tenant_section(ids.get(slug, slug))
        return sections.setdefault(name, {"keys": {}, "tenants": {}, "deployments": {}})

    for slug, tenant in document["tenants"].items():
        section_of(slug)["tenants"][slug] = tenant  # type: ignore[typeddict-item]
    for key_id, key in document["keys"].items():
        section_of(key["tenant"])["keys"][key_id] = key  # type: ignore[typeddict-item]
    for name, deployment in document["deployments"].items():
        section_of(deployment["tenant"])["deployments"][name] = deployment  # type: ignore[typeddict-item]
    if "network" in document:
        sections[PLATFORM_SECTION] = {"network": document["network"]}
    return sections


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

# KEYS: sections, index, version, the pre-sections document. ARGV: version, channel, replace (1: the sections are the
# whole document, every other one is removed), n, then n (name, section) pairs, then the names of sections to remove.
# A section whose bytes did not change keeps its index version, so readers skip it. Only when newer: returns
# {1, sections changed}, or {0, 0} when superseded.
_STORE_LUA = """
local new = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[3]) or '0')
if new <= current then
  return {0, 0}
end
local n = tonumber(ARGV[4])
local changed = 0
local named = {}
for i = 0, n - 1 do
  local name, doc = ARGV[5 + 2 * i], ARGV[6 + 2 * i]
  named[name] = true
  if redis.call('HGET', KEYS[1], name) ~= doc then
    redis.call('HSET', KEYS[1], name, doc)
    redis.call('HSET', KEYS[2], name, ARGV[1])
    changed = changed + 1
  end
end
local function remove(name)
  if redis.call('HDEL', KEYS[1], name) == 1 then
    changed = changed + 1
  end
  redis.call('HDEL', KEYS[2], name)
end
for j = 5 + 2 * n, #ARGV do
  remove(ARGV[j])
end
if ARGV[3] == '1' then
  for _, name in ipairs(redis.call('HKEYS', KEYS[2])) do
    if not named[name] then
      remove(name)
    end
  end
end
redis.call('SET', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[4])
redis.call('PUBLISH', ARGV[2], ARGV[1])
return {1, changed}
"""


class Stored(NamedTuple):
    stored: bool  # False: a newer version was stored first
    changed: int  # sections written or removed (an unchanged one is not rewritten)


def allocate_version(client: redis.Redis, prefix: str) -> int:
    """The next snapshot version: above every version allocated or stored before."""
    keys = (config_seq_key(prefix), config_version_key(prefix))
    return int(client.eval(_ALLOCATE_LUA, 2, *keys))  # type: ignore[arg-type]


def store_sections(
    client: redis.Redis,
    prefix: str,
    version: int,
    sections: dict[str, bytes],
    removed: Iterable[str],
    notify_channel: str,
    *,
    replace: bool = False,
) -> Stored:
    """Write the changed ``sections`` (encoded) with ``version`` in the index, remove ``removed``, set the version and
    PUBLISH it on ``notify_channel``, atomically, only if ``version`` is newer than the stored one.

    ``replace``: the sections are the whole document (every other section is removed).
    """
    keys = (
        config_sections_key(prefix),
        config_index_key(prefix),
        config_version_key(prefix),
        config_snapshot_key(prefix),
    )
    pairs = [item for name_doc in sections.items() for item in name_doc]
    args = (version, notify_channel, 1 if replace else 0, len(sections), *pairs, *removed)
    stored, changed = client.eval(_STORE_LUA, len(keys), *keys, *args)  # type: ignore[arg-type, misc]
    return Stored(bool(stored), int(changed))


def read_index(client: redis.Redis, prefix: str) -> tuple[int, dict[str, int]]:
    """The stored version and each section's version, read together (0 and {} before a first publish)."""
    pipe = client.pipeline(transaction=True)
    pipe.get(config_version_key(prefix))
    pipe.hgetall(config_index_key(prefix))
    raw_version, raw_index = pipe.execute()
    return int(raw_version or 0), parse_index(raw_index)


def parse_index(raw: dict[Any, Any]) -> dict[str, int]:
    """The index hash as read (bytes or str): section name -> version."""
    return {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()}


def stale_sections(index: Mapping[str, int], held: Mapping[str, int]) -> list[str]:
    """The sections a reader holding ``held`` (name -> the version it fetched at) must fetch for ``index``: those it
    lacks, and those the index lists at a newer version. What it holds that the index no longer lists is gone."""
    return [name for name, listed in index.items() if listed > held.get(name, 0)]


def read_sections(client: redis.Redis, prefix: str, names: Iterable[str]) -> dict[str, bytes]:
    """The named sections, encoded; a section removed since the index was read is absent.

    A section may be newer than the index it was looked up in (a publish came between): never older, so a reader
    that records the index's version for it at worst fetches the same bytes again.
    """
    wanted = list(names)
    if not wanted:
        return {}
    values = client.hmget(config_sections_key(prefix), wanted)
    return {name: raw for name, raw in zip(wanted, values, strict=True) if raw is not None}


def read_document(client: redis.Redis, prefix: str) -> SnapshotDocument | None:
    """The whole stored document, read in one ``MULTI`` (None before a first publish): tests, tools, backends."""
    pipe = client.pipeline(transaction=True)
    pipe.get(config_version_key(prefix))
    pipe.hgetall(config_sections_key(prefix))
    raw_version, raw_sections = pipe.execute()
    if not raw_version:
        return None
    return compose_document(int(raw_version), (decode_section(raw) for raw in raw_sections.values()))


def config_channel(client: redis.Redis, prefix: str) -> str:
    """The config notice channel of the installation ``prefix`` on the database ``client`` selects."""
    return channel_in_db(prefix, int(client.get_connection_kwargs().get("db") or 0), CONFIG_NOTIFY)


def encode_sections(sections: dict[str, SectionDoc]) -> dict[str, bytes]:
    return {name: orjson.dumps(section) for name, section in sections.items()}


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
    """Publish a whole document built without Postgres (benchmarks, tests) as a new version; returns the version.

    The same allocation and store script as the control plane's publisher; every section it does not name is
    dropped. ``notify_channel`` defaults to the installation's config channel; a test that wants a notice lost passes
    a channel nobody listens on.
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
    store_sections(client, prefix, version, encode_sections(split_document(document)), (), channel, replace=True)
    return version
