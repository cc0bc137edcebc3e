"""This run's own names on the shared Redis and Postgres, so that the suite never touches an installation's.

``make test`` may run on a machine where ``make run`` runs too: the same Redis database, the same Postgres server.
Everything the suite writes there is named after a run id (``FRONTDOOR_TEST_RUN``, else a random one):

- Frontdoor's Redis keys sit under ``fdt-<run>`` (the ``redis_prefix`` fixture adds a suffix per test);
- Celery tasks go to the queue ``fdt-<run>``, and every key Celery keeps in Redis (its queues, ``unacked``,
  ``_kombu.binding.*``, remote-control mailboxes) carries the key prefix ``fdt-<run>-celery:``;
- the test database is ``<FRONTDOOR_TEST_DATABASE>_<run>``.

pytest-django loads the settings before any conftest is imported, so the environment alone comes too late for the
test process: ``apply`` sets the names on the loaded settings and on the Celery app, and in ``os.environ`` so that
every process the tests start (workers, beat, gateway, agent, web) inherits them.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import pytest
import redis

from controlplane.contracts.sealing import dev_secrets_key

RUN_ID = re.compile(r"[a-z0-9]{1,20}")


@dataclass(frozen=True)
class RunNames:
    """The names one test run uses on the shared services, all derived from its run id."""

    run_id: str
    database: str

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], database_base: str) -> RunNames:
        run_id = environ.get("FRONTDOOR_TEST_RUN") or uuid.uuid4().hex[:10]
        if not RUN_ID.fullmatch(run_id):
            # The id goes into Redis match patterns, queue names and a database name: no wildcards, no separators.
            raise pytest.UsageError(f"FRONTDOOR_TEST_RUN={run_id!r}: use 1-20 lowercase letters and digits")
        return cls(run_id=run_id, database=f"{database_base}_{run_id}")

    @property
    def redis_prefix(self) -> str:
        return f"fdt-{self.run_id}"

    @property
    def celery_queue(self) -> str:
        return f"fdt-{self.run_id}"

    @property
    def snapshot_queue(self) -> str:
        return f"fdt-{self.run_id}.snapshot"

    @property
    def batch_queue(self) -> str:
        return f"fdt-{self.run_id}.batch"

    @property
    def celery_key_prefix(self) -> str:
        return f"fdt-{self.run_id}-celery:"

    def environ(self) -> dict[str, str]:
        """What the processes the tests start must see (they read the same settings module)."""
        return {
            "FRONTDOOR_TEST_RUN": self.run_id,
            "FRONTDOOR_REDIS_PREFIX": self.redis_prefix,
            "FRONTDOOR_CELERY_QUEUE": self.celery_queue,
            "FRONTDOOR_SNAPSHOT_QUEUE": self.snapshot_queue,
            "FRONTDOOR_BATCH_QUEUE": self.batch_queue,
            "FRONTDOOR_CELERY_KEY_PREFIX": self.celery_key_prefix,
            # The committing process publishes the snapshot itself unless a test runs the publisher's own worker
            # (tests/support/worker.py ``SnapshotPublisher``, which the ``platform`` fixture starts).
            "FRONTDOOR_SNAPSHOT_PUBLISH": "inline",
            # Secrets travel sealed to the gateways and agents this run starts, with a key of the run's own.
            "FRONTDOOR_SEAL_KEY": self.seal_key,
        }

    @property
    def seal_key(self) -> str:
        return dev_secrets_key(f"test run {self.run_id} seal")

    def key_patterns(self) -> list[str]:
        """Redis match patterns covering every key this run can write (the run's prefix, per-test ones, Celery's)."""
        return [f"{self.redis_prefix}:*", f"{self.redis_prefix}-*"]


def apply(run: RunNames) -> None:
    """Give this process (settings, Celery app) and every process it starts the run's names."""
    from django.conf import settings

    from controlplane.celery import app

    os.environ.update(run.environ())
    transport_options = {**settings.CELERY_BROKER_TRANSPORT_OPTIONS, "global_keyprefix": run.celery_key_prefix}
    settings.FRONTDOOR_REDIS_PREFIX = run.redis_prefix
    settings.FRONTDOOR_CELERY_QUEUE = run.celery_queue
    settings.FRONTDOOR_CELERY_KEY_PREFIX = run.celery_key_prefix
    settings.CELERY_TASK_DEFAULT_QUEUE = run.celery_queue
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = transport_options
    settings.FRONTDOOR_SNAPSHOT_QUEUE = run.snapshot_queue
    settings.FRONTDOOR_BATCH_QUEUE = run.batch_queue
    settings.FRONTDOOR_SNAPSHOT_PUBLISH = "inline"
    settings.FRONTDOOR_SEAL_KEY = run.seal_key
    # Inline, the snapshot's tasks go to the default queue like every other (no publisher worker consumes its own).
    settings.CELERY_TASK_ROUTES = {}
    # The app may have read the settings already (its configuration is read once, on first use).
    app.conf.task_default_queue = run.celery_queue
    app.conf.broker_transport_options = transport_options
    app.conf.task_routes = {}


def check_applied(run: RunNames) -> None:
    """Fail the session when a task would still reach another queue, or Celery's keys lack the run's prefix."""
    from django.conf import settings

    from controlplane.celery import app

    route = app.amqp.router.route({}, "deployments.reconcile_deployment")
    snapshot_route = app.amqp.router.route({}, "quotas.publish_config")
    with app.connection_for_write() as conn:
        key_prefix = conn.default_channel.global_keyprefix
    found = (
        route["queue"].name,
        snapshot_route["queue"].name,
        settings.FRONTDOOR_SNAPSHOT_QUEUE,
        settings.FRONTDOOR_BATCH_QUEUE,
        key_prefix,
    )
    expected = (run.celery_queue, run.celery_queue, run.snapshot_queue, run.batch_queue, run.celery_key_prefix)
    assert found == expected, f"the Celery app is not isolated for this run: {found} != {expected}"


def celery_key(name: str) -> str:
    """The Redis key Celery's transport uses for ``name`` (a queue, ``unacked``...) under this run's key prefix."""
    from controlplane.celery import app

    prefix: str = app.conf.broker_transport_options.get("global_keyprefix", "")
    return f"{prefix}{name}"


def sweep(client: redis.Redis, run: RunNames) -> int:
    """Delete what the run left in Redis (a killed worker's unacked task, a test stopped before its cleanup).

    Only keys under the run's own prefixes: nothing another run or an installation wrote matches them.
    """
    deleted = 0
    for pattern in run.key_patterns():
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) == 500:
                deleted += int(client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(client.delete(*batch))
    return deleted
