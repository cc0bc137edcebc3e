"""The control plane publishes the gateway's config snapshot (docs/contracts.md "Config snapshot")."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

import orjson
import pytest
import redis
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane.contracts.redis_names import CONFIG_NOTIFY, config_seq_key, config_version_key
from controlplane.contracts.snapshot import read_document, read_index, store_sections
from controlplane.redis import redis_channel
from controlplane.snapshot.publisher import (
    PROJECTED_FIELDS,
    allocate_version,
    build_snapshot,
    publish_config,
)
from controlplane.snapshot.triggers import SNAPSHOT_FIELDS, request_publish
from deployments.models import ModelDeployment, Revision
from gateway.snapshot_index import parse_snapshot
from quotas.models import Quota
from tenants.models import ApiKey, Tenant

pytestmark = pytest.mark.django_db(transaction=True)




def stored(r: redis.Redis, prefix: str) -> dict[str, Any]:
    document = read_document(r, prefix)
    assert document is not None
    return dict(document)


def stored_version(r: redis.Redis, prefix: str) -> int:
    return int(r.get(config_version_key(prefix)) or 0)


@pytest.fixture
def acme() -> Tenant:
    tenant = Tenant.objects.create(slug="acme", name="Acme")
    Quota.unscoped_objects.create(
        tenant=tenant,
        requests_per_minute=600,
        tokens_per_minute=100_000,
        max_concurrent_requests=32,
        monthly_token_budget=None,
    )
    return tenant


@pytest.fixture
def beta() -> Tenant:
    return Tenant.objects.create(slug="beta", name="Beta", status=Tenant.Status.SUSPENDED)


def deployment(tenant: Tenant, name: str, **fields: Any) -> ModelDeployment:
    fields.setdefault("model", "frontdoor/sim-chat")
    fields.setdefault("min_replicas", 0)
    return ModelDeployment.unscoped_objects.create(tenant=tenant, name=name, **fields)


def revision(dep: ModelDeployment, number: int, weight: int, endpoints: list[str] | None = None) -> Revision:
    return Revision.unscoped_objects.create(
        deployment=dep, number=number, spec=dep.revision_spec(), weight=weight, endpoints=endpoints or []
    )


def test_it_builds_the_contract_snapshot(acme: Tenant, beta: Tenant) -> None:
    now = timezone.now()
    live, _ = ApiKey.issue(tenant=acme, name="live", scopes=["inference", "read"], requests_per_minute=60)
    revoked, _ = ApiKey.issue(tenant=acme, name="revoked", scopes=["inference"])
    revoked.revoke()
    expired, _ = ApiKey.issue(tenant=acme, name="expired", scopes=["inference"], expires_at=now - timedelta(hours=1))
    ancient, _ = ApiKey.issue(tenant=acme, name="ancient", scopes=["inference"], expires_at=now - timedelta(days=90))
    suspended_key, _ = ApiKey.issue(tenant=beta, name="b", scopes=["read"])
    chat = deployment(acme, "chat-small", max_replicas=4, max_concurrent_requests=64, timeout_s=90)
    r1 = revision(chat, 1, 80, ["http://127.0.0.1:40123"])
    r2 = Revision.unscoped_objects.create(
        deployment=chat, number=2, spec={**chat.revision_spec(), "model": "frontdoor/sim-chat-v2"}, weight=20
    )
    revision(chat, 3, 0, ["http://127.0.0.1:40999"])
    ext = deployment(acme, "ext", runtime="external", endpoints=["http://10.0.0.5:8000"], min_replicas=1)
    ext_r1 = revision(ext, 1, 100)
    deployment(acme, "gone", desired_state=ModelDeployment.DesiredState.DELETING)
    stopped = deployment(beta, "idle", desired_state=ModelDeployment.DesiredState.STOPPED)

    snap = build_snapshot(version=7)

    assert snap["version"] == 7
    assert set(snap["keys"]) == {live.key_id, revoked.key_id, expired.key_id, suspended_key.key_id}
    assert ancient.key_id not in snap["keys"]
    assert snap["keys"][live.key_id] == {
        "id": live.pk,
        "env": "live",  # the key's environment segment: the gateway refuses the key presented with another
        "hash": live.secret_hash,
        "tenant": "acme",
        "scopes": ["inference", "read"],
        "expires_at": None,
        "revoked": False,
        "limits": {
            "requests_per_minute": 60,
            "tokens_per_minute": None,
            "max_concurrent_requests": None,
            "batch_requests_per_minute": None,
            "batch_tokens_per_minute": None,
        },
    }
    assert snap["keys"][revoked.key_id]["revoked"] is True
    assert snap["keys"][expired.key_id]["expires_at"] == pytest.approx(expired.expires_at.timestamp())
    assert snap["tenants"]["acme"] == {
        "id": acme.pk,
        "status": "active",
        "limits": {
            "requests_per_minute": 600,
            "tokens_per_minute": 100_000,
            "max_concurrent_requests": 32,
            "batch_requests_per_minute": 6000,
            "batch_tokens_per_minute": 2_000_000,
            "monthly_token_budget": None,
        },
    }
    # No Quota row: the model's defaults apply, never "unlimited".
    defaults = Quota()
    assert snap["tenants"]["beta"]["status"] == "suspended"
    assert snap["tenants"]["beta"]["limits"]["requests_per_minute"] == defaults.requests_per_minute
    assert snap["tenants"]["beta"]["limits"]["monthly_token_budget"] == defaults.monthly_token_budget
    assert set(snap["deployments"]) == {"acme/chat-small", "acme/ext", "beta/idle"}
    chat_doc = snap["deployments"]["acme/chat-small"]
    assert {k: chat_doc[k] for k in ("id", "tenant", "name", "model", "runtime", "state")} == {
        "id": chat.pk,
        "tenant": "acme",
        "name": "chat-small",
        "model": "frontdoor/sim-chat",
        "runtime": "builtin",
        "state": "running",
    }
    assert (chat_doc["min_replicas"], chat_doc["max_replicas"]) == (0, 4)
    assert (chat_doc["max_concurrent_requests"], chat_doc["timeout_s"]) == (64, 90)
    # The batch gate: the autoscaler's target per replica (0.7 of the default 8), and half of max_replicas.
    assert (chat_doc["batch_per_replica"], chat_doc["batch_replicas"]) == (5.6, 2)
    assert "batch_per_replica" not in snap["deployments"]["acme/ext"]  # an external endpoint: no gate
    assert chat_doc["created"] == int(chat.created_at.timestamp())
    assert chat_doc["revisions"] == [
        {"id": r1.pk, "name": "r1", "weight": 80, "model": "frontdoor/sim-chat", "endpoints": ["http://127.0.0.1:40123"]},
        {"id": r2.pk, "name": "r2", "weight": 20, "model": "frontdoor/sim-chat-v2", "endpoints": []},
    ]
    assert snap["deployments"]["acme/ext"]["revisions"] == [
        {"id": ext_r1.pk, "name": "r1", "weight": 100, "model": ext.model, "endpoints": ["http://10.0.0.5:8000"]}
    ]
    assert snap["deployments"]["beta/idle"]["state"] == "stopped"
    assert snap["deployments"]["beta/idle"]["id"] == stopped.pk
    parsed = parse_snapshot(orjson.loads(orjson.dumps(snap)))  # what the gateway makes of it, through JSON
    assert set(parsed.keys) == set(snap["keys"]) and set(parsed.tenants) == {"acme", "beta"}
    assert set(parsed.deployments) == {("acme", "chat-small"), ("acme", "ext"), ("beta", "idle")}
    assert [r.model for r in parsed.deployments[("acme", "chat-small")].revisions] == [
        "frontdoor/sim-chat",
        "frontdoor/sim-chat-v2",
    ]


def test_it_reads_postgres_in_a_handful_of_queries(acme: Tenant, beta: Tenant) -> None:
    for tenant in (acme, beta):
        for n in range(5):
            ApiKey.issue(tenant=tenant, name=f"k{n}", scopes=["inference"])
            dep = deployment(tenant, f"d{n}")
            revision(dep, 1, 50, ["http://127.0.0.1:1"])
            revision(dep, 2, 50, ["http://127.0.0.1:2"])

    with CaptureQueriesContext(connection) as queries:
        snap = build_snapshot()

    reads = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("SELECT")]
    assert len(reads) == 4, reads
    assert len(snap["deployments"]) == 10
    assert all(len(d["revisions"]) == 2 for d in snap["deployments"].values())


def test_it_stores_version_snapshot_and_notice_together(acme: Tenant, r: redis.Redis, redis_prefix: str) -> None:
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(redis_channel(CONFIG_NOTIFY))
    try:
        version = publish_config()
        message = _next_message(pubsub)
    finally:
        pubsub.close()

    assert stored_version(r, redis_prefix) == version
    assert stored(r, redis_prefix)["version"] == version
    assert "acme" in stored(r, redis_prefix)["tenants"]
    assert message == str(version)


def _next_message(pubsub: Any, timeout: float = 5.0) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
        if message is not None:
            return str(message["data"])
    return None


def _count_messages(pubsub: Any, quiet_s: float = 0.3) -> list[str]:
    """All notices until none has arrived for ``quiet_s``."""
    received: list[str] = []
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < quiet_s:
        message = pubsub.get_message(timeout=0.05)  # None also for the (ignored) subscribe confirmation
        if message is not None:
            received.append(str(message["data"]))
            quiet_since = time.monotonic()
    return received


def test_it_publishes_once_per_transaction_with_the_change(acme: Tenant, r: redis.Redis, redis_prefix: str) -> None:
    before = publish_config()
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(redis_channel(CONFIG_NOTIFY))
    try:
        with transaction.atomic():
            key, _ = ApiKey.issue(tenant=acme, name="new", scopes=["inference"])
            quota = Quota.unscoped_objects.get(tenant=acme)
            quota.requests_per_minute = 1200
            quota.save()
            dep = deployment(acme, "chat")
            revision(dep, 1, 100, ["http://127.0.0.1:5000"])
            assert stored_version(r, redis_prefix) == before  # nothing before COMMIT
        notices = _count_messages(pubsub)
    finally:
        pubsub.close()

    assert len(notices) == 1
    assert int(notices[0]) > before
    snap = stored(r, redis_prefix)
    assert snap["version"] == int(notices[0]) == stored_version(r, redis_prefix)
    assert key.key_id in snap["keys"]
    assert snap["tenants"]["acme"]["limits"]["requests_per_minute"] == 1200
    assert snap["deployments"]["acme/chat"]["revisions"][0]["endpoints"] == ["http://127.0.0.1:5000"]


def test_it_publishes_nothing_when_the_transaction_rolls_back(acme: Tenant, r: redis.Redis, redis_prefix: str) -> None:
    before = publish_config()

    with pytest.raises(RuntimeError), transaction.atomic():
        ApiKey.issue(tenant=acme, name="doomed", scopes=["inference"])
        raise RuntimeError("roll back")

    assert stored_version(r, redis_prefix) == before
    assert not ApiKey.unscoped_objects.filter(name="doomed").exists()
    # And the next transaction still publishes (no stale "already scheduled" state survives the rollback).
    with transaction.atomic():
        key, _ = ApiKey.issue(tenant=acme, name="kept", scopes=["inference"])
    assert stored_version(r, redis_prefix) > before
    assert key.key_id in stored(r, redis_prefix)["keys"]


def test_it_drops_a_change_rolled_back_to_a_savepoint(acme: Tenant, r: redis.Redis, redis_prefix: str) -> None:
    before = publish_config()

    with transaction.atomic():
        try:
            with transaction.atomic():
                ApiKey.issue(tenant=acme, name="inner", scopes=["inference"])
                raise RuntimeError("roll back the savepoint")
        except RuntimeError:
            pass

    assert stored_version(r, redis_prefix) == before


def test_it_publishes_a_revocation_made_with_update(acme: Tenant, r: redis.Redis, redis_prefix: str) -> None:
    key, _ = ApiKey.issue(tenant=acme, name="k", scopes=["inference"])
    assert stored(r, redis_prefix)["keys"][key.key_id]["revoked"] is False

    with transaction.atomic():
        ApiKey.unscoped_objects.filter(pk=key.pk).update(revoked_at=timezone.now())  # no signal fires
        request_publish()

    assert stored(r, redis_prefix)["keys"][key.key_id]["revoked"] is True


def test_it_publishes_api_key_revoke(acme: Tenant, r: redis.Redis, redis_prefix: str) -> None:
    key, _ = ApiKey.issue(tenant=acme, name="k", scopes=["inference"])

    key.revoke()

    assert stored(r, redis_prefix)["keys"][key.key_id]["revoked"] is True


def test_it_publishes_deletes_and_deleting_state(acme: Tenant, r: redis.Redis, redis_prefix: str) -> None:
    doomed = deployment(acme, "doomed")
    revision(doomed, 1, 100)
    leaving = deployment(acme, "leaving")
    key, _ = ApiKey.issue(tenant=acme, name="k", scopes=["inference"])
    assert {"acme/doomed", "acme/leaving"} <= set(stored(r, redis_prefix)["deployments"])

    doomed.delete()
    leaving.desired_state = ModelDeployment.DesiredState.DELETING
    leaving.save(update_fields=["desired_state"])
    key.delete()

    snap = stored(r, redis_prefix)
    assert "acme/doomed" not in snap["deployments"]
    assert "acme/leaving" not in snap["deployments"]
    assert key.key_id not in snap["keys"]


def test_it_ignores_saves_of_fields_the_gateway_does_not_use(acme: Tenant, r: redis.Redis, redis_prefix: str) -> None:
    dep = deployment(acme, "chat")
    before = stored_version(r, redis_prefix)

    dep.status = ModelDeployment.Status.READY
    dep.ready_replicas = 1
    dep.save(update_fields=["status", "ready_replicas"])

    assert stored_version(r, redis_prefix) == before
    dep.max_concurrent_requests = 5
    dep.save(update_fields=["max_concurrent_requests"])
    assert stored(r, redis_prefix)["deployments"]["acme/chat"]["max_concurrent_requests"] == 5


def _one_of_each(tenant: Tenant) -> dict[type[Any], Any]:
    dep = deployment(tenant, "every-model")
    key, _ = ApiKey.issue(tenant=tenant, name="k", scopes=["inference"])
    return {ApiKey: key, Tenant: tenant, Quota: tenant.quota, ModelDeployment: dep, Revision: revision(dep, 1, 100)}


# (a field the snapshot does not project, a field it projects, the projected field's new value), per model.
SAVES: dict[type[Any], tuple[str, str, Any]] = {
    ApiKey: ("name", "scopes", ["inference", "read"]),
    Tenant: ("name", "status", Tenant.Status.SUSPENDED),
    Quota: ("max_replicas", "requests_per_minute", 7),
    ModelDeployment: ("status", "max_concurrent_requests", 5),
    Revision: ("ready_replicas", "weight", 50),
}


def test_the_triggers_watch_exactly_the_fields_the_publisher_projects() -> None:
    assert set(SNAPSHOT_FIELDS) == set(PROJECTED_FIELDS) == set(SAVES)
    for model, names in PROJECTED_FIELDS.items():
        attnames = {model._meta.get_field(name).attname for name in names}
        assert SNAPSHOT_FIELDS[model] == {*names, *attnames}, model


@pytest.mark.parametrize("model", list(SAVES), ids=lambda m: m.__name__)
def test_it_republishes_on_a_projected_field_and_on_no_other(
    model: type[Any], acme: Tenant, r: redis.Redis, redis_prefix: str
) -> None:
    instance = _one_of_each(acme)[model]
    unprojected, projected, value = SAVES[model]
    assert unprojected not in SNAPSHOT_FIELDS[model] and projected in SNAPSHOT_FIELDS[model]
    before = stored_version(r, redis_prefix)

    instance.save(update_fields=[unprojected])
    assert stored_version(r, redis_prefix) == before

    setattr(instance, projected, value)
    instance.save(update_fields=[projected])
    assert stored_version(r, redis_prefix) > before


def test_it_logs_instead_of_raising_when_redis_is_down(
    acme: Tenant, settings: Any, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    with socket_closed_port() as port:
        settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
        with caplog.at_level(logging.ERROR, logger="frontdoor.quotas.publish"):
            key, _ = ApiKey.issue(tenant=acme, name="k", scopes=["inference"])  # must not raise

    assert ApiKey.unscoped_objects.filter(pk=key.pk).exists()
    assert any("config publish failed" in record.getMessage() for record in caplog.records)


class socket_closed_port:
    """A local port with nothing listening on it."""

    def __enter__(self) -> int:
        import socket

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        sock.close()
        return self.port

    def __exit__(self, *exc: object) -> None:
        return None


def test_it_never_lets_an_older_publisher_overwrite_a_newer_snapshot(r: redis.Redis, redis_prefix: str) -> None:
    older = allocate_version(r)
    newer = allocate_version(r)
    channel = redis_channel(CONFIG_NOTIFY)

    def section(key_id: str) -> dict[str, bytes]:
        return {"tenant:1": orjson.dumps({"keys": {key_id: {}}})}

    assert store_sections(r, redis_prefix, newer, section("new"), (), channel).stored
    assert not store_sections(r, redis_prefix, older, section("old"), (), channel).stored

    assert stored_version(r, redis_prefix) == newer
    assert set(stored(r, redis_prefix)["keys"]) == {"new"}
    assert read_index(r, redis_prefix) == (newer, {"tenant:1": newer})
    # A lost sequence counter cannot make versions go backwards.
    r.delete(config_seq_key(redis_prefix))
    assert allocate_version(r) > newer


def test_it_keeps_versions_monotonic_under_concurrent_publishers(
    acme: Tenant, r: redis.Redis, redis_prefix: str
) -> None:
    ApiKey.issue(tenant=acme, name="k", scopes=["inference"])
    observed: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def publisher() -> None:
        try:
            for _ in range(5):
                publish_config()
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    def watcher() -> None:
        while not done.is_set():
            version, index = read_index(r, redis_prefix)
            if index:
                observed.append((version, max(index.values())))
            time.sleep(0.002)

    threads = [threading.Thread(target=publisher) for _ in range(4)]
    watch = threading.Thread(target=watcher)
    watch.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    done.set()
    watch.join(timeout=5)

    assert not errors
    versions = [v for v, _ in observed]
    assert versions == sorted(versions)
    # No section was written by a version the stored version is not at least.
    assert all(newest_section <= version for version, newest_section in observed)
    final = stored_version(r, redis_prefix)
    assert stored(r, redis_prefix)["version"] == final
    assert final == int(r.get(config_seq_key(redis_prefix)) or 0)  # the last allocated version won


@pytest.mark.slow
def test_it_builds_a_large_snapshot_in_four_queries(r: redis.Redis, settings: Any) -> None:
    """10,000 deployments in 1,000 tenants: prints the build time (a figure, never an assertion)."""
    settings.FRONTDOOR_PUBLISH_ON_COMMIT = False
    tenants = Tenant.objects.bulk_create([Tenant(slug=f"t{i:04d}", name=f"T{i}") for i in range(1000)])
    Quota.unscoped_objects.bulk_create([Quota(tenant=t) for t in tenants])
    ApiKey.unscoped_objects.bulk_create(
        [
            ApiKey(tenant=t, name=f"k{j}", key_id=f"{i:04d}{j:04d}", secret_hash="0" * 64, scopes=["inference"])
            for i, t in enumerate(tenants)
            for j in range(2)
        ]
    )
    deployments = ModelDeployment.unscoped_objects.bulk_create(
        [ModelDeployment(tenant=t, name=f"d{j}", model="m", min_replicas=0) for t in tenants for j in range(10)]
    )
    Revision.unscoped_objects.bulk_create(
        [
            Revision(deployment=d, number=n, spec={}, spec_hash="x", weight=50, endpoints=["http://10.0.0.1:8000"])
            for d in deployments
            for n in (1, 2)
        ]
    )

    timings = []
    for _ in range(3):
        started = time.perf_counter()
        with CaptureQueriesContext(connection) as queries:
            snap = build_snapshot()
        document = orjson.dumps(snap)
        timings.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    publish_config()
    publish_ms = (time.perf_counter() - started) * 1000

    reads = [q for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("SELECT")]
    assert len(reads) == 4
    assert len(snap["deployments"]) == 10_000
    print(
        f"\nsnapshot of 1,000 tenants, 2,000 keys, 10,000 deployments, 20,000 revisions: {len(document)} bytes; "
        f"build+serialise {min(timings):.0f} ms (best of 3), full publish_config {publish_ms:.0f} ms"
    )
