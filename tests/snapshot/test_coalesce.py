"""Commits mark sections dirty; one publisher at a time rebuilds them, coalesced (controlplane/snapshot/coalesce.py)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.db import connection

from controlplane.contracts.redis_names import (
    config_dirty_key,
    config_publish_queued_key,
    config_stats_key,
    config_taken_key,
)
from controlplane.contracts.snapshot import PLATFORM_SECTION, read_document, read_index, tenant_section
from controlplane.snapshot import coalesce
from controlplane.snapshot.publisher import Published, publish_config, publish_sections
from controlplane.snapshot.tasks import publish_dirty_task
from quotas.models import Quota
from tenants.models import ApiKey, Tenant
from tests.support import isolation

pytestmark = pytest.mark.django_db(transaction=True)


def tenant(slug: str) -> Tenant:
    created = Tenant.objects.create(slug=slug, name=slug.title())
    Quota.unscoped_objects.create(tenant=created)
    return created


@pytest.fixture
def acme() -> Tenant:
    return tenant("acme")


@pytest.fixture
def globex() -> Tenant:
    return tenant("globex")


def document_keys(r: redis.Redis, prefix: str) -> set[str]:
    document = read_document(r, prefix)
    assert document is not None
    return set(document["keys"])


def test_a_commit_rewrites_only_the_section_of_the_tenant_it_changed(
    acme: Tenant, globex: Tenant, r: redis.Redis, redis_prefix: str
) -> None:
    publish_config()
    version, before = read_index(r, redis_prefix)

    key, _ = ApiKey.issue(tenant=acme, name="new", scopes=["inference"])

    after_version, after = read_index(r, redis_prefix)
    assert after_version > version
    assert after[tenant_section(acme.pk)] == after_version
    assert after[tenant_section(globex.pk)] == before[tenant_section(globex.pk)]
    assert after[PLATFORM_SECTION] == before[PLATFORM_SECTION]
    assert key.key_id in document_keys(r, redis_prefix)


def test_a_full_rebuild_that_changed_nothing_rewrites_no_section(
    acme: Tenant, globex: Tenant, r: redis.Redis, redis_prefix: str
) -> None:
    first = publish_config()
    _, index = read_index(r, redis_prefix)

    second = publish_config()

    assert second > first
    assert read_index(r, redis_prefix) == (second, index)  # the version moved, no section did


def test_a_deleted_tenant_loses_its_section(acme: Tenant, globex: Tenant, r: redis.Redis, redis_prefix: str) -> None:
    ApiKey.issue(tenant=globex, name="k", scopes=["inference"])
    section = tenant_section(globex.pk)
    assert section in read_index(r, redis_prefix)[1]

    ApiKey.unscoped_objects.filter(tenant=globex).delete()
    globex.delete()

    _, index = read_index(r, redis_prefix)
    assert section not in index and tenant_section(acme.pk) in index
    document = read_document(r, redis_prefix)
    assert document is not None and set(document["tenants"]) == {"acme"}


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[float, Published]]]:
    """Every build the publisher makes, with when it started."""
    made: list[tuple[float, Published]] = []

    def recording(client: redis.Redis, tenant_ids: Any = None) -> Published:
        started = time.monotonic()
        published = publish_sections(client, tenant_ids)
        made.append((started, published))
        return published

    monkeypatch.setattr(coalesce, "publish_sections", recording)
    yield made


def test_commits_made_while_a_publisher_builds_are_published_together_by_it(
    acme: Tenant, r: redis.Redis, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_config()
    building, go_on = threading.Event(), threading.Event()
    calls: list[Published] = []

    def slow_first_build(client: redis.Redis, tenant_ids: Any = None) -> Published:
        if not calls:
            building.set()
            assert go_on.wait(timeout=30), "the test never let the first build finish"
        calls.append(publish_sections(client, tenant_ids))
        return calls[-1]

    monkeypatch.setattr(coalesce, "publish_sections", slow_first_build)
    coalesce.mark_dirty(r, [tenant_section(acme.pk)])
    errors: list[BaseException] = []

    def holder() -> None:
        try:
            coalesce.run_publisher(r, interval_s=0.05)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=holder)
    thread.start()
    assert building.wait(timeout=30)
    # Twenty commits while the lock is held: each marks and finds the lock taken, and none builds.
    issued = [ApiKey.issue(tenant=acme, name=f"k{n}", scopes=["inference"])[0].key_id for n in range(20)]
    assert not calls
    go_on.set()
    thread.join(timeout=60)

    assert not errors
    assert len(calls) == 2  # the held build, then one for all twenty
    assert set(issued) <= document_keys(r, redis_prefix)
    assert not r.exists(config_dirty_key(redis_prefix), config_taken_key(redis_prefix))


def test_it_builds_at_most_once_per_interval_while_marks_keep_arriving(
    acme: Tenant,
    r: redis.Redis,
    redis_prefix: str,
    builds: list[tuple[float, Published]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recording = coalesce.publish_sections

    def build_and_receive_a_mark(client: redis.Redis, tenant_ids: Any = None) -> Published:
        published = recording(client, tenant_ids)
        if len(builds) < 4:
            coalesce.mark_dirty(client, [tenant_section(acme.pk)])  # a commit during this build
        return published

    monkeypatch.setattr(coalesce, "publish_sections", build_and_receive_a_mark)
    coalesce.mark_dirty(r, [tenant_section(acme.pk)])
    counted = int(r.hget(config_stats_key(redis_prefix), "builds") or 0)

    run = coalesce.run_publisher(r, interval_s=0.2)

    assert run.builds == len(builds) == 4
    starts = [started for started, _ in builds]
    assert all(later - earlier >= 0.2 for earlier, later in itertools.pairwise(starts))
    assert int(r.hget(config_stats_key(redis_prefix), "builds") or 0) == counted + 4  # the operators' counter


def test_a_failed_build_leaves_its_marks_for_the_next_publisher(
    acme: Tenant, r: redis.Redis, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_config()

    def broken(client: redis.Redis, tenant_ids: Any = None) -> Published:
        raise ConnectionError("Postgres went away mid-build")

    monkeypatch.setattr(coalesce, "publish_sections", broken)
    with pytest.raises(ConnectionError):
        key, _ = ApiKey.issue(tenant=acme, name="k", scopes=["inference"])
        coalesce.run_publisher(r)  # (the commit's own run logged the same failure)
    key = ApiKey.unscoped_objects.get(name="k")
    assert key.key_id not in document_keys(r, redis_prefix)
    assert r.smembers(config_taken_key(redis_prefix)) == {tenant_section(acme.pk)}

    monkeypatch.setattr(coalesce, "publish_sections", publish_sections)
    run = coalesce.run_publisher(r)

    assert run.builds == 1
    assert key.key_id in document_keys(r, redis_prefix)
    assert not r.exists(config_dirty_key(redis_prefix), config_taken_key(redis_prefix))


def test_a_second_publisher_leaves_the_work_to_the_one_holding_the_lock(
    acme: Tenant, r: redis.Redis, redis_prefix: str
) -> None:
    r.set(f"{redis_prefix}:config:publisher", "someone-else", px=30_000)
    coalesce.mark_dirty(r, [tenant_section(acme.pk)])

    run = coalesce.run_publisher(r)

    assert (run.held, run.builds) == (False, 0)
    assert r.smembers(config_dirty_key(redis_prefix)) == {tenant_section(acme.pk)}


def test_queued_a_commit_marks_and_queues_one_publisher_task_while_one_is_pending(
    acme: Tenant, r: redis.Redis, redis_prefix: str, settings: Any
) -> None:
    publish_config()
    version = read_index(r, redis_prefix)[0]
    settings.FRONTDOOR_SNAPSHOT_PUBLISH = "queue"
    queue = isolation.celery_key(settings.FRONTDOOR_SNAPSHOT_QUEUE)
    try:
        keys = [ApiKey.issue(tenant=acme, name=f"k{n}", scopes=["inference"])[0].key_id for n in range(5)]

        assert r.llen(queue) == 1  # five commits, one task
        assert r.smembers(config_dirty_key(redis_prefix)) == {tenant_section(acme.pk)}
        assert read_index(r, redis_prefix)[0] == version  # nothing was built in the committing process

        # What the publisher's worker runs when it takes the task.
        assert publish_dirty_task() == 1
        assert set(keys) <= document_keys(r, redis_prefix)
        assert not r.exists(config_publish_queued_key(redis_prefix))
    finally:
        r.delete(queue)


def test_queued_a_commit_publishes_itself_when_the_publishers_worker_takes_no_task(
    acme: Tenant, r: redis.Redis, redis_prefix: str, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.FRONTDOOR_SNAPSHOT_PUBLISH = "queue"
    queue = isolation.celery_key(settings.FRONTDOOR_SNAPSHOT_QUEUE)
    try:
        first, _ = ApiKey.issue(tenant=acme, name="first", scopes=["inference"])
        assert r.llen(queue) == 1 and first.key_id not in document_keys(r, redis_prefix)
        # Its task has waited for a while and no publisher is running: the worker is down.
        r.set(config_publish_queued_key(redis_prefix), time.time() - 5, ex=30)

        with caplog.at_level("WARNING", logger="frontdoor.quotas.publish"):
            second, _ = ApiKey.issue(tenant=acme, name="second", scopes=["inference"])

        assert {first.key_id, second.key_id} <= document_keys(r, redis_prefix)
        assert r.llen(queue) == 1  # nothing more was queued for the absent worker
        assert any("took no task" in record.getMessage() for record in caplog.records)
    finally:
        r.delete(queue)
