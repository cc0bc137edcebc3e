"""Chaos: Postgres is really restarted while a real Celery worker reconciles, and every deployment converges after.

The shared server (127.0.0.1:5432) must never be restarted, so this test brings its own: a disposable PostgreSQL
server (``chaos_pg_server.py`` beside this file: own data directory, port and socket, removed afterwards). The
schema comes from ``manage.py migrate`` and the deployments from the service layer (``chaos_pg_seed.py``), both in
subprocesses pointed at it with ``DATABASE_URL``; creating them enqueues their reconciles onto this test's queue.
A ``celery worker`` subprocess (solo pool) reconciles them against the fake Kubernetes API server, slowed down so
a reconcile is in flight; midway through the batch the server is stopped (``pg_ctl stop -m fast``: every session
is terminated), left down for two seconds (new connections are refused), and started again.

Nothing is enqueued again by the test: the interrupted and refused passes converge by the tasks' own retries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from psycopg import sql

from controlplane.celery import app
from deployments.models import DeploymentEvent, ModelDeployment, Revision
from tests.deployments.reconcile.chaos_pg_server import DisposablePostgres, PostgresUnavailable
from tests.fakekube.server import FakeKubeServer
from tests.fakekube.validation import server_side_problem
from tests.support.isolation import celery_key

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[3]
DATABASE = "fd_chaos"
DEPLOYMENTS = 20
DOWN_S = 2.0  # how long the server stays stopped: long enough for the worker to meet refused connections
API_LATENCY_S = 0.05  # per fake API call: a reconcile takes about half a second, the batch about ten
STALL_S = 1.0  # per fake API call just before the stop
SUBPROCESS_TIMEOUT_S = 30
CONVERGE_TIMEOUT_S = 45


@pytest.fixture
def postgres() -> Iterator[DisposablePostgres]:
    """A started disposable server with an empty ``fd_chaos`` database; stopped and deleted even on failure."""
    try:
        server = DisposablePostgres()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc}: CI must run the Postgres restart test (apt-get install postgresql)")
        pytest.skip(str(exc))
    try:
        server.init()
        server.start()
        server.create_database(DATABASE)
        yield server
    finally:
        server.destroy()


@pytest.fixture
def fake() -> Iterator[FakeKubeServer]:
    """The fake Kubernetes API server, validating every object written against the real schemas."""
    server = FakeKubeServer().start()
    server.store.validator = server_side_problem
    yield server
    server.stop()


class Run:
    """The environment every subprocess of this test shares, and the worker subprocess itself."""

    def __init__(self, postgres: DisposablePostgres, fake: FakeKubeServer, log_dir: Path) -> None:
        self.queue = f"fdt-pgr-{uuid.uuid4().hex[:8]}"
        # Config snapshots the worker publishes land under this prefix, deleted afterwards.
        self.redis_prefix = f"{os.environ.get('FRONTDOOR_REDIS_PREFIX', 'fdt')}-{uuid.uuid4().hex[:8]}"
        self.log_dir = log_dir
        self.worker_log = log_dir / "worker.log"
        self.env = {
            **os.environ,
            "DATABASE_URL": postgres.url(DATABASE),
            "CELERY_BROKER_URL": app.conf.broker_url,
            "FRONTDOOR_REDIS_PREFIX": self.redis_prefix,
            "FRONTDOOR_BACKEND": "kubernetes",
            "FRONTDOOR_K8S_API_URL": fake.url,
        }
        self.worker: subprocess.Popen[bytes] | None = None

    def manage(self, *args: str) -> str:
        """Run a command (``-m module`` or ``manage.py ...``) against the disposable database; its stdout."""
        result = subprocess.run(
            [sys.executable, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_S,
            check=False,
        )
        assert result.returncode == 0, f"{args} failed:\n{result.stderr[-3000:]}"
        return result.stdout

    def start_worker(self) -> None:
        command = [
            sys.executable, "-m", "celery", "-A", "controlplane", "worker",
            "-P", "solo", "-Q", self.queue, "-n", f"{self.queue}@%h",
            "--without-heartbeat", "--without-mingle", "--without-gossip", "-l", "INFO",
        ]  # fmt: skip
        log = self.worker_log.open("wb")
        self.worker = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()  # the child holds its own descriptor

    def worker_alive(self) -> bool:
        return self.worker is not None and self.worker.poll() is None

    def worker_output(self) -> str:
        return self.worker_log.read_text(errors="replace") if self.worker_log.exists() else ""

    def cleanup(self) -> None:
        if self.worker_alive():
            assert self.worker is not None
            self.worker.terminate()
            try:
                self.worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait(timeout=10)
        client = redis.Redis.from_url(app.conf.broker_url)
        try:
            # The queue, and the bindings kombu keeps for it (the worker declares them), under the run's key prefix.
            names = (self.queue, f"_kombu.binding.{self.queue}", f"_kombu.binding_permanent.{self.queue}")
            client.delete(*(celery_key(name) for name in names))
            for key in client.scan_iter(match=f"{self.redis_prefix}:*", count=1000):
                client.delete(key)
        finally:
            client.close()


@pytest.fixture
def run(postgres: DisposablePostgres, fake: FakeKubeServer, tmp_path: Path) -> Iterator[Run]:
    r = Run(postgres, fake, tmp_path)
    yield r
    r.cleanup()


# ---------------------------------------------------------------- reading the disposable database (plain SQL)

_DEPLOYMENTS = sql.Identifier(ModelDeployment._meta.db_table)
_REVISIONS = sql.Identifier(Revision._meta.db_table)
_EVENTS = sql.Identifier(DeploymentEvent._meta.db_table)


def read_deployments(postgres: DisposablePostgres) -> dict[int, tuple[str, int, int]]:
    """id → (status, generation, observed_generation); empty while the server refuses connections."""
    query = sql.SQL("SELECT id, status, generation, observed_generation FROM {}").format(_DEPLOYMENTS)
    try:
        with postgres.connect(DATABASE) as conn:
            rows: list[Any] = conn.execute(query).fetchall()
    except psycopg.OperationalError:
        return {}
    return {int(r[0]): (str(r[1]), int(r[2]), int(r[3])) for r in rows}


def count_by_deployment(
    postgres: DisposablePostgres, table: sql.Identifier, reason: str | None = None
) -> dict[int, int]:
    """deployment id → rows of ``table`` (events: only those with ``reason``)."""
    where = sql.SQL("reason = {}").format(reason) if reason else sql.SQL("TRUE")
    query = sql.SQL("SELECT deployment_id, count(*) FROM {} WHERE {} GROUP BY 1").format(table, where)
    with postgres.connect(DATABASE) as conn:
        rows: list[Any] = conn.execute(query).fetchall()
    return {int(r[0]): int(r[1]) for r in rows}


def ready_count(postgres: DisposablePostgres) -> int:
    return sum(1 for status, g, o in read_deployments(postgres).values() if status == "ready" and g == o)


def wait_for(
    condition: Callable[[], bool], timeout_s: float, what: str, run: Run, postgres: DisposablePostgres
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        assert run.worker_alive(), f"the worker exited while waiting for {what}:\n{run.worker_output()[-4000:]}"
        time.sleep(0.25)
    raise AssertionError(
        f"timed out waiting for {what}; worker log:\n{run.worker_output()[-4000:]}\nserver log:\n{postgres.log_tail()}"
    )


def assert_one_set_of_objects_each(fake: FakeKubeServer, count: int) -> None:
    with fake.store.lock:
        for i in range(count):
            selector = f"frontdoor.dev/deployment=m{i}"
            for plural in ("deployments", "services", "poddisruptionbudgets"):
                found: list[Any] = [o["metadata"]["name"] for o in fake.store.list(plural, "fd-chaos", selector)]
                assert found == [f"m{i}-r1"], (plural, found)
        assert len(fake.store.list("deployments", None, "")) == count
        assert len(fake.store.list("namespaces", None, "")) == 1


# ---------------------------------------------------------------- the test


def test_it_converges_after_postgres_restarts_during_reconciles(
    postgres: DisposablePostgres, fake: FakeKubeServer, run: Run
) -> None:
    run.manage("manage.py", "migrate", "--noinput", "-v", "0")
    seed = ("-m", "tests.deployments.reconcile.chaos_pg_seed", "--count", str(DEPLOYMENTS), "--queue", run.queue)
    ids = json.loads(run.manage(*seed))
    assert len(ids) == DEPLOYMENTS

    fake.store.faults.latency_s = API_LATENCY_S
    run.start_worker()
    wait_for(lambda: ready_count(postgres) >= 2, 30, "the first deployments to converge", run, postgres)
    # Stall the API so the worker sits inside a pass: every pass opens its transaction before its first API call,
    # so a worker blocked in one holds an open transaction (and the deployment's advisory lock).
    fake.store.faults.latency_s = STALL_S
    time.sleep(STALL_S / 2)
    ready_when_stopped = ready_count(postgres)
    postgres.stop(mode="fast")  # terminates that session mid-transaction: its database writes roll back
    fake.store.faults.latency_s = API_LATENCY_S
    time.sleep(DOWN_S)
    postgres.start()
    postgres.wait_accepting()

    wait_for(
        lambda: ready_count(postgres) == DEPLOYMENTS, CONVERGE_TIMEOUT_S, "convergence after the restart", run, postgres
    )

    output = run.worker_output()
    assert ready_when_stopped < DEPLOYMENTS, "the restart landed after the batch had finished"
    retried = [line for line in output.splitlines() if "retry:" in line and "OperationalError" in line]
    assert retried, "no reconcile was interrupted by the restart:\n" + output[-4000:]
    assert run.worker_alive()
    rows = read_deployments(postgres)
    assert sorted(rows) == sorted(ids)
    assert all(status == "ready" and generation == observed for status, generation, observed in rows.values())
    assert count_by_deployment(postgres, _REVISIONS) == dict.fromkeys(ids, 1)
    # A pass rolled back by the restart wrote nothing: each deployment became Ready exactly once.
    assert count_by_deployment(postgres, _EVENTS, reason="Ready") == dict.fromkeys(ids, 1)
    assert_one_set_of_objects_each(fake, DEPLOYMENTS)
