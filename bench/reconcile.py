"""Reconcile benchmark: 1,000 deployments in 100 tenants against the fake Kubernetes API server.

The fake runs its cluster (``tests/fakekube/controller.py``): ReplicaSets, pods scheduled onto GPU nodes, quota
admission, readiness. With ``--pod-controller thread`` (the default) the controllers run on their own thread, so
a deployment's pods become ready a moment after its pass, and a pass that ends ``progressing`` is followed up
``FOLLOW_UP_COUNTDOWN_S`` later, as the task does; with ``settle`` they settle inside every write, so a
Deployment is ready when its write returns.

Prints the time to converge (every deployment Ready), the API calls it took, what a following no-op pass over
every deployment writes, and what one periodic resync writes once everything is converged: ``resync_all``'s work,
i.e. ``reconcile_tenant`` for every tenant plus ``reconcile_deployment`` for what
``deployments_needing_reconcile(ready_slice("kubernetes"))`` picks (the unconverged ones and a rotating tenth of the
ready ones), through a fresh backend whose tenant cache is cold as in a newly started worker (targets: <= 60 s,
0 writes). Uses its own database (created and dropped here) and
runs the fake server as a separate process, so the numbers include real HTTP through the official client.

    .venv/bin/python bench/reconcile.py [--deployments 1000] [--tenants 100] [--threads 8]
        [--pod-controller thread|settle] [--gpu-nodes N]
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BENCH_DB = os.environ.get("FRONTDOOR_BENCH_DATABASE", "bench_fd_reconcile")


def _admin_sql(sql: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c", sql], check=True, capture_output=True)


def _fake(url: str, path: str, method: str = "GET") -> dict[str, Any]:
    body = b"{}" if method == "POST" else None
    request = urllib.request.Request(url + path, method=method, data=body)  # noqa: S310 (our local server)
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (a local URL we started)
        return dict(json.loads(response.read() or b"{}"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument(
        "--pod-controller",
        choices=("thread", "settle"),
        default="thread",
        help="the fake's controllers on their own thread (pods ready a moment later), or settled in every write",
    )
    parser.add_argument("--gpu-nodes", type=int, default=0, help="8-GPU nodes per GPU type (default: room for all)")
    args = parser.parse_args()
    gpu_nodes = args.gpu_nodes or math.ceil(args.deployments / 8 * 1.1) + 2  # 1 GPU each, a surge's room

    _admin_sql(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    _admin_sql(f'CREATE DATABASE "{BENCH_DB}"')
    command = [sys.executable, "-m", "tests.fakekube.server", "--controller", args.pod_controller]
    fake = subprocess.Popen([*command, "--gpu-nodes", str(gpu_nodes)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout is not None
        url = fake.stdout.readline().strip()
        os.environ.update(
            DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}",
            DJANGO_SETTINGS_MODULE="controlplane.settings",
            FRONTDOOR_BACKEND="kubernetes",
            FRONTDOOR_K8S_API_URL=url,
        )
        print(f"fake cluster: {gpu_nodes} nodes of 8 GPUs per GPU type, controllers: {args.pod_controller}")
        run(url, args.deployments, args.tenants, args.threads)
    finally:
        fake.terminate()
        fake.wait(timeout=10)
        from django.db import connections

        connections.close_all()
        _admin_sql(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        _drop_config_keys()


def _drop_config_keys() -> None:
    """The reconciles published gateway snapshots under this run's prefix; nothing reads them once it ends."""
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    for key in client.scan_iter(match=f"{settings.FRONTDOOR_REDIS_PREFIX}:config:*", count=1000):
        client.delete(key)
    client.close()


def run(url: str, n_deployments: int, n_tenants: int, threads: int) -> None:
    import django

    django.setup()
    import logging

    # One "published config version N" line per converging deployment would bury the figures; count them instead.
    publishes = [0]

    class _CountPublishes(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            publishes[0] += record.getMessage().startswith("published config")
            return False

    logging.getLogger("frontdoor.quotas.publish").addFilter(_CountPublishes())
    from django.core.management import call_command
    from django.db import connection

    from deployments.backends.kubernetes import KubernetesBackend
    from deployments.models import ModelDeployment, Revision
    from deployments.reconcile import engine as reconcile
    from deployments.tasks import FOLLOW_UP_COUNTDOWN_S, FOLLOW_UPS, ready_slice
    from quotas.models import Quota
    from tenants.models import Tenant

    call_command("migrate", verbosity=0)
    tenants = Tenant.objects.bulk_create(Tenant(slug=f"t{i:03d}", name=f"T{i}") for i in range(n_tenants))
    Quota.unscoped_objects.bulk_create(Quota(tenant=t, gpus={"nvidia-h100": 64}, max_replicas=64) for t in tenants)
    per_tenant = max(1, n_deployments // n_tenants)
    deployments = ModelDeployment.unscoped_objects.bulk_create(
        ModelDeployment(
            tenant=t,
            name=f"m{j}",
            runtime="vllm",
            model="m",
            gpu_type="nvidia-h100",
            gpu_count=1,
            min_replicas=1,
            max_replicas=2,
            desired_replicas=1,
        )
        for t in tenants
        for j in range(per_tenant)
    )
    Revision.unscoped_objects.bulk_create(
        Revision(deployment=d, number=1, spec=d.revision_spec(), spec_hash="bench", weight=100) for d in deployments
    )
    connection.close()
    ids = [d.pk for d in deployments]
    backend = KubernetesBackend.from_environment()  # replaced by a fresh one (cold tenant cache) for the resync

    db_writes = [0]
    lock = threading.Lock()

    def count_writes(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.lstrip().split(None, 1)[0].upper() in {"INSERT", "UPDATE", "DELETE"}:
            with lock:
                db_writes[0] += 1
        return execute(sql, params, many, context)

    def one(deployment_id: int) -> str:
        from django.db import connection as thread_connection

        try:
            with thread_connection.execute_wrapper(count_writes):
                for _ in range(5):  # what the task's retries would do
                    try:
                        return reconcile.reconcile_deployment(deployment_id, backend).outcome
                    except Exception:  # noqa: S112 (bench: retry like the task, report failures below)
                        continue
            return "failed"
        finally:
            thread_connection.close()

    def tenant_one(tenant_id: int) -> str:
        from django.db import connection as thread_connection

        try:
            with thread_connection.execute_wrapper(count_writes):
                return "applied" if reconcile.reconcile_tenant(tenant_id, backend) else "missing"
        finally:
            thread_connection.close()

    def with_follow_ups(pass_ids: list[int]) -> tuple[list[str], int]:
        """Every deployment once; one whose pass ends ``progressing`` again ``FOLLOW_UP_COUNTDOWN_S`` later, at most
        ``FOLLOW_UPS`` times (the task's follow-ups). The last outcomes, and the follow-up passes run."""
        queue = [(0.0, n, deployment_id, FOLLOW_UPS) for n, deployment_id in enumerate(pass_ids)]
        last: dict[int, str] = {}
        busy, follow_ups, order = [0], [0], [len(queue)]
        cond = threading.Condition()

        def worker() -> None:
            while True:
                with cond:
                    while True:
                        if queue and queue[0][0] <= time.monotonic():
                            _due, _n, deployment_id, left = heapq.heappop(queue)
                            busy[0] += 1
                            break
                        if not queue and not busy[0]:
                            cond.notify_all()
                            return
                        cond.wait(timeout=0.05 if not queue else max(0.0, queue[0][0] - time.monotonic()))
                outcome = one(deployment_id)
                with cond:
                    busy[0] -= 1
                    last[deployment_id] = outcome
                    if outcome == "progressing" and left > 0:
                        follow_ups[0] += 1
                        order[0] += 1
                        due = time.monotonic() + FOLLOW_UP_COUNTDOWN_S
                        heapq.heappush(queue, (due, order[0], deployment_id, left - 1))
                    cond.notify_all()

        workers = [threading.Thread(target=worker) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return [last[i] for i in pass_ids], follow_ups[0]

    def pass_over(
        label: str, pass_ids: list[int], tenant_ids: tuple[int, ...] = (), follow_up: bool = False
    ) -> dict[str, Any]:
        _fake(url, "/_fake/reset", "POST")
        db_writes[0] = publishes[0] = 0
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            outcomes = list(pool.map(tenant_one, tenant_ids))
            if not follow_up:
                outcomes += list(pool.map(one, pass_ids))
        follow_ups = 0
        if follow_up:
            finals, follow_ups = with_follow_ups(pass_ids)
            outcomes += finals
        elapsed = time.perf_counter() - started
        stats = _fake(url, "/_fake/stats")
        stats["db_writes"] = db_writes[0]
        stats["publishes"], publishes[0] = publishes[0], 0
        summary = {o: outcomes.count(o) for o in sorted(set(outcomes))}
        what = f"{len(pass_ids)} deployments" + (f" + {len(tenant_ids)} tenants" if tenant_ids else "")
        print(
            f"{label}: {elapsed:.1f} s for {what} ({len(outcomes) / elapsed:.0f}/s), "
            f"API calls {stats['calls']} (reads {stats['reads']}, writes {stats['writes']}), "
            f"Postgres write statements {stats['db_writes']}, gateway config publishes {stats['publishes']}, "
            f"outcomes {summary}" + (f", follow-up passes {follow_ups}" if follow_up else "")
        )
        return {"elapsed": elapsed, **stats}

    print(f"{len(ids)} deployments in {n_tenants} tenants, {threads} reconcile threads, fake API at {url}")
    first = pass_over("first reconcile (create everything, with the follow-ups)", ids, follow_up=True)
    ready = ModelDeployment.unscoped_objects.filter(status="ready").count()
    print(f"ready after the first reconcile and its follow-ups: {ready}/{len(ids)}")
    second = pass_over("no-op pass (every deployment again)", ids)
    print(f"no-op pass: Kubernetes writes {second['writes']}, Postgres write statements {second['db_writes']}")
    unconverged = reconcile.deployments_needing_reconcile()
    picked = reconcile.deployments_needing_reconcile(ready_slice("kubernetes"))
    print(f"resync: {len(unconverged)} unconverged; with this resync's tenth of the ready ones it picks {len(picked)}")
    backend = KubernetesBackend.from_environment()  # a cold tenant cache, as in a newly started worker
    tenant_ids = tuple(Tenant.objects.order_by("pk").values_list("pk", flat=True))
    third = pass_over("one resync (resync_all's work, cold tenant cache)", picked, tenant_ids)
    print(f"resync: Kubernetes writes {third['writes']}, Postgres write statements {third['db_writes']}")
    no_writes = all(p["writes"] == 0 and p["db_writes"] == 0 for p in (second, third))
    verdict = "met" if first["elapsed"] <= 60 and ready == len(ids) and no_writes else "NOT met"
    print(f"target (converge <= 60 s, no-op and resync writes 0): {verdict}")
    connection.close()


if __name__ == "__main__":
    main()
