"""Build the gateway's config snapshot (keys, tenants, limits, deployments, endpoints) from Postgres, in sections, and
store them in Redis.

``controlplane.contracts.snapshot`` owns the document's shape, its sections (one per tenant, one for the platform)
and the store script; docs/contracts.md "Config snapshot" describes them. Ordering argument (docs/usage.md has the
long form):

1. A version is allocated *before* Postgres is read (``INCR <prefix>:config:seq``).
2. The sections asked for (some tenants', or all) are read in one REPEATABLE READ transaction, so they are one
   consistent state of the database that includes every commit finished before step 1.
3. A Lua script stores the sections that changed and sets ``<prefix>:config:version`` only when that version is
   newer than the stored one, then PUBLISHes the version, atomically.

So a publisher that read Postgres earlier (an older version) can never overwrite one that read it later. Who
publishes when is ``controlplane.snapshot.coalesce``'s job: every commit that changes what the gateway needs marks its
tenants' sections dirty (controlplane/snapshot/triggers.py, from ``PROJECTED_FIELDS`` below), and the publisher
rebuilds the marked sections. ``config:version`` only ever moves together with the sections: the gateway never sees
a version that has no sections behind it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar, cast

import orjson
import redis
from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import F, FloatField, Func, Q, QuerySet, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.utils import timezone

from controlplane.contracts import snapshot as contract
from controlplane.contracts.protocols import OPENAI
from controlplane.contracts.redis_names import CONFIG_NOTIFY
from controlplane.contracts.sealing import SealError
from controlplane.contracts.snapshot import (
    KEY_LIMIT_FIELDS,
    TENANT_LIMIT_FIELDS,
    DeploymentDoc,
    KeyDoc,
    Limits,
    NetworkDoc,
    SectionDoc,
    SnapshotDocument,
    TenantDoc,
)
from controlplane.redis import get_redis, redis_channel, redis_prefix
from deployments.models import ModelDeployment, Revision, Runtime, TenantSecret
from deployments.network import network_document
from deployments.scaling.kpa import TARGET_UTILIZATION
from deployments.sizing import sizing_for
from quotas.models import Quota
from tenants.models import ApiKey, Tenant

log = logging.getLogger("frontdoor.quotas.publish")

M = TypeVar("M", bound=models.Model)

# Revoked or expired keys stay in the snapshot this long, so the gateway can say "revoked"/"expired"
# precisely; after that they are dropped and refused as unknown keys (fail closed either way).
DEAD_KEY_GRACE = timedelta(days=30)

# What the snapshot projects of each model: the model fields its queries read, in the order each section unpacks
# its rows (relations by their field name). The triggers republish after a save that touches one of them and after
# no other (controlplane/snapshot/triggers.py), so a field added here is a field whose change reaches the gateway.
PROJECTED_FIELDS: dict[type[models.Model], tuple[str, ...]] = {
    ApiKey: ("id", "key_id", "env", "secret_hash", "tenant", "scopes", "expires_at", "revoked_at", *KEY_LIMIT_FIELDS),
    Tenant: ("id", "slug", "status"),
    Quota: ("tenant", "id", *TENANT_LIMIT_FIELDS),  # read through the tenant (``quota__``), joined on ``tenant``
    ModelDeployment: (
        "id",
        "tenant",
        "name",
        "model",
        "runtime",
        "desired_state",
        "min_replicas",
        "max_replicas",
        "max_concurrent_requests",
        "timeout_s",
        "created_at",
        "endpoints",
        "upstream_key_secret",
        # How long the gateway holds a request while the deployment starts (``cold_hold_s``).
        "cold_start_timeout_s",
        "gpu_type",
        "gpu_count",
        "startup_timeout_s",
        # The batch gate: how many requests a replica takes before the autoscaler would add one.
        "target_concurrency",
        # Which routes reach the deployment: the protocol's, and /v1/images/generations.
        "protocol",
        "image_generation",
    ),
    Revision: ("id", "deployment", "number", "weight", "endpoints", "spec"),
}


def _columns(model: type[models.Model], read_as: Mapping[str, str | None], through: str = "") -> list[str]:
    """The ``values_list`` lookups reading ``PROJECTED_FIELDS[model]``: each field by its name, or by the annotation
    or related field ``read_as`` names for it (``None``: the relation the query joins on, not a column)."""
    lookups = (read_as.get(name, name) for name in PROJECTED_FIELDS[model])
    return [through + lookup for lookup in lookups if lookup is not None]


def _quota_defaults() -> Limits:
    """Limits for a tenant without a Quota row: the model's defaults, never 'unlimited' by accident."""
    fields = {f.name: f for f in Quota._meta.concrete_fields}
    return _tenant_limits(*(fields[name].get_default() for name in TENANT_LIMIT_FIELDS))


def _tenant_limits(
    rpm: int | None,
    tpm: int | None,
    concurrent: int | None,
    batch_rpm: int | None,
    batch_tpm: int | None,
    budget: int | None,
) -> Limits:
    return {
        "requests_per_minute": rpm,
        "tokens_per_minute": tpm,
        "max_concurrent_requests": concurrent,
        "batch_requests_per_minute": batch_rpm,
        "batch_tokens_per_minute": batch_tpm,
        "monthly_token_budget": budget,
    }


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


def _keys_section(now: datetime, tenant_ids: Collection[int] | None) -> dict[int, dict[str, KeyDoc]]:
    """Each tenant's keys (of ``tenant_ids``, or every tenant's), by tenant id."""
    cutoff = now - DEAD_KEY_GRACE
    rows = (
        _of_tenants(ApiKey.unscoped_objects.all(), tenant_ids)
        .filter(Q(revoked_at__isnull=True) | Q(revoked_at__gte=cutoff))
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gte=cutoff))
        .order_by()
        .annotate(expires_epoch=_epoch_of("expires_at"))
        .values_list(*_columns(ApiKey, {"tenant": "tenant__slug", "expires_at": "expires_epoch"}), "tenant_id")
    )
    by_tenant: dict[int, dict[str, KeyDoc]] = {}
    for pk, key_id, env, secret_hash, tenant, scopes, expires_at, revoked_at, *limits, tid in rows:
        rpm, tpm, concurrent, batch_rpm, batch_tpm = limits
        by_tenant.setdefault(tid, {})[key_id] = {
            "id": pk,
            # The environment segment the key was issued with: a key presented with another one is refused.
            "env": env,
            "hash": secret_hash,
            "tenant": tenant,
            "scopes": list(scopes or []),
            "expires_at": expires_at,
            "revoked": revoked_at is not None,
            "limits": {
                "requests_per_minute": rpm,
                "tokens_per_minute": tpm,
                "max_concurrent_requests": concurrent,
                "batch_requests_per_minute": batch_rpm,
                "batch_tokens_per_minute": batch_tpm,
            },
        }
    return by_tenant


def _tenants_section(tenant_ids: Collection[int] | None) -> dict[int, tuple[str, TenantDoc]]:
    """Each tenant (of ``tenant_ids``, or every one) that exists: its slug and its entry, by id."""
    defaults = _quota_defaults()
    rows = (
        _of_tenants(Tenant.objects.all(), tenant_ids, field="pk")
        .order_by()
        .values_list(*_columns(Tenant, {}), *_columns(Quota, {"tenant": None}, through="quota__"))
    )
    tenants: dict[int, tuple[str, TenantDoc]] = {}
    for pk, slug, status, quota_id, *limits in rows:
        tenants[pk] = (
            slug,
            {
                "id": pk,
                "status": status,
                "limits": _tenant_limits(*limits) if quota_id is not None else defaults.copy(),
            },
        )
    return tenants


def upstream_model(runtime: str, name: str, model: str) -> str:
    """The model id the gateway sends the replicas. Triton's ``model`` is where its model repository is; the model
    in it answers under the deployment's own name (``/v2/models/<name>/infer``, KServe's convention: the
    repository's model folder is named so)."""
    return name if runtime == Runtime.TRITON else model


def cold_hold_s(runtime: str, chosen: int | None, gpus: int, startup_timeout_s: int | None) -> int | None:
    """How long the gateway holds a request for the deployment while no replica is up: the deployment's own
    ``cold_start_timeout_s``; else, on Kubernetes, its startup window (a GPU node, the image and the weights take
    minutes there); else None, the gateway's ``FRONTDOOR_GATEWAY_COLD_HOLD_S``."""
    if chosen is not None:
        return chosen
    if settings.FRONTDOOR_BACKEND != "kubernetes" or runtime == Runtime.EXTERNAL:
        return None
    return sizing_for(runtime, gpus, {"startup_timeout_s": startup_timeout_s}).startup_timeout_s


def batch_gate(target_concurrency: int, max_replicas: int) -> tuple[float, int]:
    """The batch gate of a deployment: the autoscaler's target of requests per replica (batch load within it never
    makes the autoscaler add a replica), and the replicas batch may keep busy or wake: ``FRONTDOOR_BATCH_REPLICA_SHARE``
    of ``max_replicas``, rounded up (0 when the share is 0: batch then only uses replicas interactive traffic holds)."""
    per_replica = round(TARGET_UTILIZATION * target_concurrency, 6)
    share = settings.FRONTDOOR_BATCH_REPLICA_SHARE
    return per_replica, min(max_replicas, math.ceil(share * max_replicas - 1e-9)) if share > 0 else 0


def _deployments_section(tenant_ids: Collection[int] | None) -> dict[int, dict[str, DeploymentDoc]]:
    """Each tenant's live deployments with their routed revisions (of ``tenant_ids``, or every tenant's), by id."""
    live = ~Q(desired_state=ModelDeployment.DesiredState.DELETING)
    deployments: dict[int, dict[str, DeploymentDoc]] = {}
    by_id: dict[int, DeploymentDoc] = {}
    external_endpoints: dict[int, list[str]] = {}
    rows = (
        _of_tenants(ModelDeployment.unscoped_objects.filter(live), tenant_ids)
        .order_by()
        .annotate(created_epoch=_epoch_of("created_at"), endpoints_json=_json_text("endpoints"))
        .values_list(
            *_columns(
                ModelDeployment,
                {"tenant": "tenant__slug", "created_at": "created_epoch", "endpoints": "endpoints_json"},
            ),
            "tenant_id",
        )
    )
    keyed: list[tuple[DeploymentDoc, int, str]] = []  # external deployments with an upstream key: (doc, tenant, secret)
    for row in rows:
        pk, tenant, name, model, runtime, state, min_r, max_r, max_c, timeout_s, created, endpoints, key = row[:13]
        cold_start, gpu_type, gpu_count, startup, target, protocol, images, tid = row[13:]
        doc: DeploymentDoc = {
            "id": pk,
            "tenant": tenant,
            "name": name,
            "model": upstream_model(runtime, name, model),
            "runtime": runtime,
            "state": state,
            "min_replicas": min_r,
            "max_replicas": max_r,
            "max_concurrent_requests": max_c,
            "timeout_s": timeout_s,
            "created": int(created),
            "revisions": [],
        }
        if (hold := cold_hold_s(runtime, cold_start, gpu_count if gpu_type else 0, startup)) is not None:
            doc["cold_hold_s"] = hold
        if runtime != Runtime.EXTERNAL:  # an external endpoint's capacity is its own: no gate
            doc["batch_per_replica"], doc["batch_replicas"] = batch_gate(target, max_r)
        # Only when they differ from what their absence means, so the documents of deployments that never set them
        # keep their bytes.
        if protocol != OPENAI:
            doc["protocol"] = protocol
        if images:
            doc["image_generation"] = True
        deployments.setdefault(tid, {})[contract.deployment_key(tenant, name)] = doc
        by_id[pk] = doc
        if runtime == Runtime.EXTERNAL:
            # An external deployment's replicas are its own endpoint URLs; no backend reports any.
            external_endpoints[pk] = _urls(endpoints)
            if key:
                keyed.append((doc, tid, key))
    _seal_upstream_keys(keyed)
    # Only routed revisions (weight > 0) travel: the gateway ignores the others, and history would bloat it.
    revisions = (
        _of_tenants(Revision.unscoped_objects.filter(weight__gt=0), tenant_ids, field="deployment__tenant_id")
        .exclude(deployment__desired_state=ModelDeployment.DesiredState.DELETING)
        .order_by("deployment_id", "number")
        .annotate(endpoints_json=_json_text("endpoints"), spec_model=KeyTextTransform("model", "spec"))
        .values_list(
            *_columns(Revision, {"deployment": "deployment_id", "endpoints": "endpoints_json", "spec": "spec_model"})
        )
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
                # What this revision's replicas serve (a canary may differ); Triton's, the deployment's own name.
                "model": parent["model"] if parent["runtime"] == Runtime.TRITON else model or parent["model"],
                "endpoints": urls if urls is not None else _urls(endpoints),
            }
        )
    return deployments


def _seal_upstream_keys(keyed: list[tuple[DeploymentDoc, int, str]]) -> None:
    """Put each external deployment's upstream key in its doc, sealed for the gateway: (doc, tenant id, secret name).

    One query reads every secret named, in the build's transaction. The seal is deterministic, so a section whose
    key did not change keeps its bytes (and is not rewritten). A key that cannot be sealed or sent is left out with
    a warning naming the deployment, never the value: the gateway then sends no Authorization header.
    """
    if not keyed:
        return
    # Imported here: deployments.secrets publishes through controlplane.snapshot.triggers, which imports this module.
    from deployments import secrets as tenant_secrets

    sealer = tenant_secrets.transport_sealer()
    if sealer is None:
        for doc, _, _ in keyed:
            log.warning("deployment %s/%s: upstream key left out: no FRONTDOOR_SEAL_KEY", doc["tenant"], doc["name"])
        return
    rows = (
        TenantSecret.unscoped_objects.filter(
            tenant_id__in={tid for _, tid, _ in keyed},
            name__in={name for _, _, name in keyed},
            kind=TenantSecret.Kind.GENERIC,
        )
        .order_by()
        .only("tenant_id", "name", "sealed_value")
    )
    secrets = {(secret.tenant_id, secret.name): secret for secret in rows}
    for doc, tid, name in keyed:
        where = f"deployment {doc['tenant']}/{doc['name']}"
        secret = secrets.get((tid, name))
        if secret is None:
            log.warning("%s: upstream key left out: the tenant has no generic secret %r", where, name)
            continue
        try:
            value = tenant_secrets.reveal(secret)
        except SealError as exc:
            log.warning("%s: upstream key left out: secret %r does not open: %s", where, name, exc)
            continue
        if problem := contract.upstream_key_problem(value):
            log.warning("%s: upstream key left out: secret %r cannot be sent: %s", where, name, problem)
            continue
        context = contract.upstream_key_context(doc["tenant"], doc["name"])
        doc["upstream_key"] = sealer.seal(value, context, deterministic=True)


def _of_tenants(rows: QuerySet[M], tenant_ids: Collection[int] | None, field: str = "tenant_id") -> QuerySet[M]:
    return rows if tenant_ids is None else rows.filter(**{f"{field}__in": list(tenant_ids)})


@dataclass(frozen=True)
class Built:
    """Sections read from Postgres: those to write, and the tenant sections whose tenant is gone."""

    sections: dict[str, SectionDoc]
    removed: frozenset[str]


def build_sections(version: int, tenant_ids: Collection[int] | None = None) -> Built:
    """The sections of ``tenant_ids`` (None: every tenant's) and the platform's, read from Postgres in four queries
    (a fifth reads the secrets of external deployments that send an upstream key).

    Outside a transaction the reads run in one REPEATABLE READ, READ ONLY transaction, so keys, tenants and
    deployments come from the same moment. Inside a caller's transaction they share the caller's view.
    """
    if connection.in_atomic_block:
        return _build(version, tenant_ids)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return _build(version, tenant_ids)


def _build(version: int, tenant_ids: Collection[int] | None) -> Built:
    now = timezone.now()
    keys = _keys_section(now, tenant_ids)
    tenants = _tenants_section(tenant_ids)
    deployments = _deployments_section(tenant_ids)
    sections: dict[str, SectionDoc] = {}
    for tenant_id, (slug, tenant) in tenants.items():
        sections[contract.tenant_section(tenant_id)] = {
            "tenants": {slug: tenant},
            "keys": keys.get(tenant_id, {}),
            "deployments": deployments.get(tenant_id, {}),
        }
    # The address policy the gateway applies before it connects (resolved once per process, no query): in every
    # build, as it costs nothing and the store skips it unchanged, so a first build or a changed setting carries it.
    sections[contract.PLATFORM_SECTION] = {"network": cast(NetworkDoc, network_document())}
    gone = (contract.tenant_section(tenant_id) for tenant_id in tenant_ids or () if tenant_id not in tenants)
    return Built(sections, frozenset(gone))


def build_snapshot(version: int = 0) -> SnapshotDocument:
    """The whole document (``controlplane.contracts.snapshot``): every section, composed."""
    return contract.compose_document(version, build_sections(version).sections.values(), time.time())


def allocate_version(client: redis.Redis) -> int:
    """The next snapshot version: above every version allocated or stored before."""
    return contract.allocate_version(client, redis_prefix())


@dataclass(frozen=True)
class Published:
    """One publish: its version, whether it was stored (not superseded), what it built and changed, how long the read
    took."""

    version: int
    stored: bool
    sections: int  # built
    changed: int  # written or removed (a section that came out the same is not rewritten)
    size: int  # bytes built
    build_ms: float


def publish_sections(client: redis.Redis, tenant_ids: Collection[int] | None = None) -> Published:
    """Allocate a version, build the sections of ``tenant_ids`` (None: all, replacing every stored section), store
    them if still the newest and notify. Raises Redis and database errors (the caller keeps the marks it took).
    """
    version = allocate_version(client)
    started = time.perf_counter()
    built = build_sections(version, tenant_ids)
    encoded = contract.encode_sections(built.sections)
    build_ms = (time.perf_counter() - started) * 1000
    channel = redis_channel(CONFIG_NOTIFY)
    stored, changed = contract.store_sections(
        client, redis_prefix(), version, encoded, sorted(built.removed), channel, replace=tenant_ids is None
    )
    size = sum(len(doc) for doc in encoded.values())
    if stored:
        log.info(
            "published config version %d: %d of %d sections (%d bytes) changed, built in %.0f ms",
            version,
            changed,
            len(encoded),
            size,
            build_ms,
        )
    else:
        log.info("config version %d superseded by a newer publish; not stored", version)
    return Published(version, stored, len(encoded), changed, size, build_ms)


def publish_config() -> int:
    """Publish every section now, outside the coalescing publisher (tests, tools); returns the version.

    Raises Redis and database errors.
    """
    return publish_sections(get_redis()).version
