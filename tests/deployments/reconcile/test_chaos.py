"""Chaos: a real Celery worker (solo pool, own queue, this run's Redis db and test database) reconciles against
the fake API server while it is killed with SIGKILL mid-reconcile, and while its Postgres connections are
terminated. After the disruption the deployments converge, with exactly one set of objects each.

The shared Postgres server is never restarted (other suites use it): ``pg_terminate_backend`` on the worker's
connections to this run's test database stands in for a database restart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from controlplane.celery import app
from deployments.models import ModelDeployment, Revision
from quotas.models import Quota
from tenants.models import Tenant
from tests.fakekube.server import FakeKubeServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[3]
# Only the worker's connections are terminated: this process's own pooled ones must survive for the next tests.
WORKER_APPLICATION_NAME = "fdt-chaos-worker"


@pytest.fixture
def fake() -> Iterator[FakeKubeServer]:
    server = FakeKubeServer().start()
    yield server
    server.stop()


class Worker:
    """One ``celery worker`` subprocess consuming only this test's queue."""

    def __init__(self, fake: FakeKubeServer, log_dir: Path) -> None:
        self.queue = f"fdt-chaos-{uuid.uuid4().hex[:8]}"
        self.fake = fake
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        settings = connection.settings_dict
        env = {
            **os.environ,
            "DATABASE_URL": f"postgres://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/{settings['NAME']}",
            "CELERY_BROKER_URL": app.conf.broker_url,
            "FRONTDOOR_BACKEND": "kubernetes",
            "FRONTDOOR_K8S_API_URL": self.fake.url,
            "FRONTDOOR_TASK_VISIBILITY_TIMEOUT": "5",  # a killed worker's task comes back after 5 s
            "PGAPPNAME": WORKER_APPLICATION_NAME,  # libpq tags the worker's connections, the only ones terminated
        }
        self.starts += 1
        log = (self.log_dir / f"worker-{self.starts}.log").open("wb")
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "controlplane",
            "worker",
            "-P",
            "solo",
            "-Q",
            self.queue,
            "-n",
            f"{self.queue}-{self.starts}@%h",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
            "-l",
            "INFO",
        ]
        self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def enqueue(self, deployment_ids: list[int]) -> None:
        for deployment_id in deployment_ids:
            app.send_task("deployments.reconcile_deployment", args=[deployment_id], queue=self.queue)


@pytest.fixture
def worker(fake: FakeKubeServer, tmp_path: Path) -> Iterator[Worker]:
    w = Worker(fake, tmp_path)
    yield w
    w.stop()
    with app.connection_for_write() as conn:
        conn.default_channel.client.delete(w.queue)


def make_deployments(count: int) -> list[int]:
    tenant = Tenant.objects.create(slug="chaos", name="Chaos")
    Quota.unscoped_objects.create(tenant=tenant, gpus={"nvidia-h100": 8}, max_replicas=32)
    ids = []
    for i in range(count):
        d = ModelDeployment.unscoped_objects.create(
            tenant=tenant,
            name=f"m{i}",
            runtime="builtin",
            model="m",
            min_replicas=1,
            max_replicas=2,
            desired_replicas=1,
        )
        Revision.unscoped_objects.create(deployment=d, number=1, spec=d.revision_spec(), weight=100)
        ids.append(d.pk)
    return ids


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, worker: Worker) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(worker.log_dir.glob("*.log")))
    raise AssertionError(f"timed out waiting for {what}; worker logs:\n{logs}")


def converged(ids: list[int]) -> Callable[[], bool]:
    def check() -> bool:
        rows = ModelDeployment.unscoped_objects.filter(pk__in=ids).values_list(
            "status", "generation", "observed_generation"
        )
        return len(rows) == len(ids) and all(s == "ready" and g == o for s, g, o in rows)

    return check


def assert_one_set_of_objects_each(fake: FakeKubeServer, count: int) -> None:
    with fake.store.lock:
        for i in range(count):
            selector = f"frontdoor.dev/deployment=m{i}"
            for plural in ("deployments", "services", "poddisruptionbudgets"):
                found = [o["metadata"]["name"] for o in fake.store.list(plural, "fd-chaos", selector)]
                assert found == [f"m{i}-r1"], (plural, found)
        assert len(fake.store.list("deployments", None, "")) == count


def test_it_converges_after_the_worker_is_killed_mid_reconcile(fake: FakeKubeServer, worker: Worker) -> None:
    ids = make_deployments(4)
    fake.store.faults.latency_s = 0.15  # about 2 s per reconcile: the kill lands inside one
    worker.start()
    worker.enqueue(ids)
    wait_for(lambda: fake.store.stats.writes >= 2, 60, "the first writes", worker)
    worker.kill()
    partial = fake.store.stats.writes
    assert not converged(ids)()
    fake.store.faults.latency_s = 0.0
    worker.start()
    worker.enqueue(ids)  # what the periodic resync does; the killed task is also redelivered
    wait_for(converged(ids), 90, "convergence after SIGKILL", worker)
    assert_one_set_of_objects_each(fake, 4)
    assert partial > 0 and worker.alive()


def test_it_converges_after_its_database_connections_are_terminated(fake: FakeKubeServer, worker: Worker) -> None:
    ids = make_deployments(3)
    fake.store.faults.latency_s = 0.1
    worker.start()
    worker.enqueue(ids)
    wait_for(lambda: fake.store.stats.reads >= 1, 60, "the first reconcile", worker)
    terminated = 0
    database = connection.settings_dict["NAME"]
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:  # a "database restart" every half second, during reconciles
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND application_name = %s AND pid <> pg_backend_pid()",
                [database, WORKER_APPLICATION_NAME],
            )
            row: Any = cursor.fetchone()
            terminated += int(row[0])
        time.sleep(0.5)
    fake.store.faults.latency_s = 0.0
    worker.enqueue(ids)  # the periodic resync
    wait_for(converged(ids), 90, "convergence after terminated connections", worker)
    assert terminated > 0
    assert worker.alive()
    assert_one_set_of_objects_each(fake, 3)
