"""A revoked key, a suspended tenant and a lowered limit are refused by every gateway within 2 s, also while 1,000
deployment commits stream in: the commits mark the snapshot dirty, and the publisher's own worker builds it, coalesced.

Real parts throughout: Postgres, Redis, the publisher's Celery worker on its own queue, two gateway processes and the
built-in model server behind them. The deadline is the contract; the wait for each refusal is bounded by it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection

from controlplane.contracts.redis_names import config_seq_key
from controlplane.contracts.snapshot import read_document, read_index
from controlplane.redis import get_redis
from controlplane.snapshot.publisher import publish_config
from deployments.models import ModelDeployment, Revision
from quotas.models import Quota
from tenants import services
from tenants.models import ApiKey, Tenant
from tests.support.gateway import Process, start_gateway, start_modelserver, stop
from tests.support.worker import SnapshotPublisher

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

DEADLINE_S = 2.0  # the contract: every gateway refuses within 2 s of the commit
CHANGES = 1_000  # deployment commits in the mass change
CHAT = "/v1/chat/completions"
BODY = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}


def tenant_with_chat(slug: str, upstream: str) -> tuple[Tenant, ApiKey, str]:
    """A tenant whose deployment ``chat`` routes to ``upstream``, and an inference key of it."""
    tenant = Tenant.objects.create(slug=slug, name=slug.title())
    Quota.unscoped_objects.create(tenant=tenant)
    chat = ModelDeployment.unscoped_objects.create(tenant=tenant, name="chat", model="frontdoor/sim-chat")
    Revision.unscoped_objects.create(
        deployment=chat, number=1, spec=chat.revision_spec(), weight=100, endpoints=[upstream]
    )
    key, full = ApiKey.issue(tenant=tenant, name="app", scopes=["inference"])
    return tenant, key, full


@pytest.fixture
def queued(settings: Any, redis_prefix: str) -> dict[str, str]:
    """Commits in this process queue their marks for the publisher's worker, as in production."""
    settings.FRONTDOOR_SNAPSHOT_PUBLISH = "queue"
    return {"FRONTDOOR_SNAPSHOT_PUBLISH": "queue"}


@pytest.fixture
def gateways(tmp_path: Path, redis_prefix: str, redis_url: str) -> Iterator[list[Process]]:
    started = [
        start_gateway(tmp_path, redis_prefix, redis_url, FRONTDOOR_KEY_PEPPER=django_settings.FRONTDOOR_KEY_PEPPER)
        for _ in range(2)
    ]
    yield started
    for gateway in started:
        stop(gateway.proc)


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Process]:
    server = start_modelserver(tmp_path)
    yield server
    stop(server.proc)


@pytest.fixture
def publisher(tmp_path: Path, redis_prefix: str, queued: dict[str, str]) -> Iterator[SnapshotPublisher]:
    worker = SnapshotPublisher(tmp_path, redis_prefix, queued)
    yield worker
    worker.stop()


def status(gateway: Process, full_key: str) -> int:
    headers = {"authorization": f"Bearer {full_key}"}
    return httpx.post(gateway.url + CHAT, json=BODY, headers=headers, timeout=5).status_code


def wait_for(what: str, probe: Any, deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if probe():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {deadline_s:.0f} s waiting for {what}")


class MassChange(threading.Thread):
    """``CHANGES`` commits, each changing one deployment the gateway routes (its concurrency limit)."""

    def __init__(self, deployments: list[int]) -> None:
        super().__init__(daemon=True)
        self.deployments = deployments
        self.done = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for n, pk in enumerate(self.deployments):
                deployment = ModelDeployment.unscoped_objects.get(pk=pk)
                deployment.max_concurrent_requests = 10 + n
                deployment.save(update_fields=["max_concurrent_requests"])
                self.done += 1
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            connection.close()


def test_refusals_reach_every_gateway_within_2_s_during_a_1000_deployment_change(
    settings: Any,
    redis_prefix: str,
    queued: dict[str, str],
    publisher: SnapshotPublisher,
    gateways: list[Process],
    upstream: Process,
) -> None:
    r: redis.Redis = get_redis()
    settings.FRONTDOOR_PUBLISH_ON_COMMIT = False  # the setup is published once, below
    big = Tenant.objects.create(slug="big", name="Big")
    Quota.unscoped_objects.create(tenant=big)
    mass = ModelDeployment.unscoped_objects.bulk_create(
        [ModelDeployment(tenant=big, name=f"d{n:04d}", model="m", min_replicas=0) for n in range(CHANGES)]
    )
    _, revoked_key, revoked_full = tenant_with_chat("acme", upstream.url)
    suspended, _, suspended_full = tenant_with_chat("globex", upstream.url)
    _, limited_key, limited_full = tenant_with_chat("initech", upstream.url)
    settings.FRONTDOOR_PUBLISH_ON_COMMIT = True
    version = publish_config()
    # Every gateway serves all three keys (each key's first minute now holds at least one request per gateway).
    for gateway in gateways:
        wait_for("the gateway to load the snapshot", lambda g=gateway: status(g, revoked_full) == 200, 10)
        assert (status(gateway, suspended_full), status(gateway, limited_full)) == (200, 200)
    assert read_index(r, redis_prefix)[0] >= version

    seq_before = int(r.get(config_seq_key(redis_prefix)) or 0)
    change = MassChange([d.pk for d in mass])
    change.start()
    wait_for("the mass change to be under way", lambda: change.done >= CHANGES // 5 or change.error, 60)
    assert change.error is None
    refusals = {
        "revoked key": (revoked_full, 401, lambda: services.revoke_key(revoked_key, actor=None)),
        "suspended tenant": (suspended_full, 403, lambda: services.suspend_tenant(suspended, actor=None)),
        "lowered limit": (
            limited_full,
            429,
            lambda: services.update_key(limited_key, changes={"requests_per_minute": 1}, actor=None),
        ),
    }
    for what, (full, code, commit) in refusals.items():
        assert change.is_alive(), "the mass change ended before the refusals were tested"
        commit()
        for n, gateway in enumerate(gateways):
            refused = lambda g=gateway, f=full, c=code: status(g, f) == c  # noqa: E731
            wait_for(f"gateway {n} to refuse the {what} with {code}", refused, DEADLINE_S)
    during = change.done
    change.join(timeout=120)
    assert change.error is None and change.done == CHANGES
    assert during < CHANGES  # the refusals were checked while commits were still arriving

    # The last commit is published too, and far fewer builds than commits covered them all.
    wait_for("the last commit to be published", lambda: last_limit(r, redis_prefix) == 10 + CHANGES - 1, 30)
    builds = int(r.get(config_seq_key(redis_prefix)) or 0) - seq_before
    assert 0 < builds < CHANGES


def last_limit(r: redis.Redis, prefix: str) -> int | None:
    """The published concurrency limit of the mass change's last deployment."""
    document = read_document(r, prefix)
    deployment = (document or {}).get("deployments", {}).get(f"big/d{CHANGES - 1:04d}")
    return deployment["max_concurrent_requests"] if deployment else None
