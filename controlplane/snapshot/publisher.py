"""Publish the gateway's config snapshot (keys, tenants, limits, deployments, endpoints) to Redis.

docs/contracts.md "Config snapshot" is the wire format. Ordering argument (docs/usage.md has the long form):

1. A version is allocated *before* Postgres is read (``INCR <prefix>:config:seq``).
2. The snapshot is read in one REPEATABLE READ transaction, so it is one consistent state of the database
   that includes every commit finished before step 1.
3. A Lua script stores the snapshot and sets ``<prefix>:config:version`` only when that version is newer
   than the stored one, then PUBLISHes the version, atomically.

So the stored snapshot is always the one with the highest version, and a publisher that read Postgres
earlier (an older version) can never overwrite one that read it later. Every commit that changes what the
gateway needs triggers a publish after it (controlplane/snapshot/triggers.py), so the last stored snapshot includes it.
``config:version`` only ever moves together with the snapshot: the gateway never sees a version that has
no snapshot behind it.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

import orjson
import redis
from django.db import connection, transaction
from django.db.models import F, FloatField, Func, Q, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.utils import timezone

from controlplane.contracts.channels import CONFIG_NOTIFY
from controlplane.redis import get_redis, redis_channel, redis_key
from deployments.models import ModelDeployment, Revision, Runtime
from deployments.network import network_document
from quotas.models import Quota
from tenants.models import ApiKey, Tenant

log = logging.getLogger("frontdoor.quotas.publish")

# Revoked or expired keys stay in the snapshot this long, so the gateway can say "revoked"/"expired"
# precisely; after that they are dropped and refused as unknown keys (fail closed either way).
DEAD_KEY_GRACE = timedelta(days=30)

TENANT_LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute", "max_concurrent_requests", "monthly_token_budget")
KEY_LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute", "max_concurrent_requests")

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


def _quota_defaults() -> dict[str, Any]:
    """Limits for a tenant without a Quota row: the model's defaults, never 'unlimited' by accident."""
    fields = {f.name: f for f in Quota._meta.concrete_fields}
    return {name: fields[name].get_default() for name in TENANT_LIMIT_FIELDS}


def _epoch_of(field: str) -> Func:
    """Epoch seconds computed by Postgres: parsing 10,000 timestamps in Python costs more than the query."""
    return Func(F(field), template="EXTRACT(EPOCH FROM %(expressions)s)::double precision", output_field=FloatField())


def _json_text(field: str) -> Cast:
    """A JSON column as text, for orjson (several times faster than the stdlib decoder Django would use)."""
    return Cast(field, output_field=TextField())


def _urls(text: str | None) -> list[str]:
    if not text or text == "[]":
        return []
    value = orjson.loads(text)
    return [str(url) for url in value] if isinstance(value, list) else []


def _keys_section(now: datetime) -> dict[str, Any]:
    cutoff = now - DEAD_KEY_GRACE
    rows = (
        ApiKey.unscoped_objects.filter(Q(revoked_at__isnull=True) | Q(revoked_at__gte=cutoff))
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gte=cutoff))
        .order_by()
        .annotate(expires_epoch=_epoch_of("expires_at"))
        .values_list(
            "id",
            "key_id",
            "env",
            "secret_hash",
            "tenant__slug",
            "scopes",
            "expires_epoch",
            "revoked_at",
            *KEY_LIMIT_FIELDS,
        )
    )
    keys: dict[str, Any] = {}
    for pk, key_id, env, secret_hash, tenant, scopes, expires_at, revoked_at, rpm, tpm, concurrent in rows:
        keys[key_id] = {
            "id": pk,
            # The environment segment the key was issued with: a key presented with another one is refused.
            "env": env,
            "hash": secret_hash,
            "tenant": tenant,
            "scopes": list(scopes or []),
            "expires_at": expires_at,
            "revoked": revoked_at is not None,
            "limits": {"requests_per_minute": rpm, "tokens_per_minute": tpm, "max_concurrent_requests": concurrent},
        }
    return keys


def _tenants_section() -> dict[str, Any]:
    defaults = _quota_defaults()
    rows = Tenant.objects.order_by().values_list(
        "id", "slug", "status", "quota__id", *(f"quota__{name}" for name in TENANT_LIMIT_FIELDS)
    )
    tenants: dict[str, Any] = {}
    for pk, slug, status, quota_id, *limits in rows:
        tenants[slug] = {
            "id": pk,
            "status": status,
            "limits": dict(zip(TENANT_LIMIT_FIELDS, limits, strict=True)) if quota_id is not None else dict(defaults),
        }
    return tenants


def _deployments_section() -> dict[str, Any]:
    live = ~Q(desired_state=ModelDeployment.DesiredState.DELETING)
    deployments: dict[str, Any] = {}
    by_id: dict[int, dict[str, Any]] = {}
    external_endpoints: dict[int, list[str]] = {}
    rows = (
        ModelDeployment.unscoped_objects.filter(live)
        .order_by()
        .annotate(created_epoch=_epoch_of("created_at"), endpoints_json=_json_text("endpoints"))
        .values_list(
            "id",
            "tenant__slug",
            "name",
            "model",
            "runtime",
            "desired_state",
            "min_replicas",
            "max_replicas",
            "max_concurrent_requests",
            "timeout_s",
            "created_epoch",
            "endpoints_json",
        )
    )
    for pk, tenant, name, model, runtime, state, min_r, max_r, concurrent, timeout_s, created, endpoints in rows:
        doc = {
            "id": pk,
            "tenant": tenant,
            "name": name,
            "model": model,
            "runtime": runtime,
            "state": state,
            "min_replicas": min_r,
            "max_replicas": max_r,
            "max_concurrent_requests": concurrent,
            "timeout_s": timeout_s,
            "created": int(created),
            "revisions": [],
        }
        deployments[f"{tenant}/{name}"] = doc
        by_id[pk] = doc
        if runtime == Runtime.EXTERNAL:
            # An external deployment's replicas are its own endpoint URLs; no backend reports any.
            external_endpoints[pk] = _urls(endpoints)
    # Only routed revisions (weight > 0) travel: the gateway ignores the others, and history would bloat it.
    revisions = (
        Revision.unscoped_objects.filter(weight__gt=0)
        .exclude(deployment__desired_state=ModelDeployment.DesiredState.DELETING)
        .order_by("deployment_id", "number")
        .annotate(endpoints_json=_json_text("endpoints"), model=KeyTextTransform("model", "spec"))
        .values_list("id", "deployment_id", "number", "weight", "endpoints_json", "model")
    )
    for pk, deployment_id, number, weight, endpoints, model in revisions:
        parent = by_id.get(deployment_id)
        if parent is None:  # a deployment created after the deployments query: the next publish has it
            continue
        urls = external_endpoints.get(deployment_id)
        parent["revisions"].append(
            {
                "id": pk,
                "name": f"r{number}",
                "weight": weight,
                "model": model or parent["model"],  # what this revision's replicas serve (a canary may differ)
                "endpoints": urls if urls is not None else _urls(endpoints),
            }
        )
    return deployments


def build_snapshot(version: int = 0) -> dict[str, Any]:
    """The snapshot document of docs/contracts.md, read from Postgres in four queries (``network`` needs none).

    Outside a transaction the reads run in one REPEATABLE READ, READ ONLY transaction, so keys, tenants and
    deployments come from the same moment. Inside a caller's transaction they share the caller's view.
    """
    if connection.in_atomic_block:
        return _build(version)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return _build(version)


def _build(version: int) -> dict[str, Any]:
    now = timezone.now()
    return {
        "version": version,
        "published_at": time.time(),
        "keys": _keys_section(now),
        "tenants": _tenants_section(),
        "deployments": _deployments_section(),
        # The address policy the gateway applies before it connects (resolved once per process, no query).
        "network": network_document(),
    }


def allocate_version(client: redis.Redis) -> int:
    """The next snapshot version: above every version allocated or stored before."""
    keys = (redis_key("config", "seq"), redis_key("config", "version"))
    return int(client.eval(_ALLOCATE_LUA, 2, *keys))  # type: ignore[arg-type]


def store_snapshot(client: redis.Redis, version: int, document: bytes) -> bool:
    """Store the snapshot, set the version and notify, atomically, only if ``version`` is the newest; True if so."""
    keys = (redis_key("config", "snapshot"), redis_key("config", "version"))
    notify = redis_channel(CONFIG_NOTIFY)
    stored = client.eval(_STORE_LUA, 2, *keys, version, document, notify)  # type: ignore[arg-type]
    return bool(stored)


def publish_config() -> int:
    """Allocate a version, build the snapshot, store it if still the newest and notify; returns the version.

    Raises Redis and database errors: callers on a commit path log them (the periodic task republishes).
    """
    client = get_redis()
    version = allocate_version(client)
    started = time.perf_counter()
    document = orjson.dumps(build_snapshot(version))
    built_ms = (time.perf_counter() - started) * 1000
    if store_snapshot(client, version, document):
        log.info("published config version %d (%d bytes, built in %.0f ms)", version, len(document), built_ms)
    else:
        log.info("config version %d superseded by a newer publish; not stored", version)
    return version
