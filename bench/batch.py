"""Batch benchmark on the local backend: batch throughput on an idle deployment, interactive latency with and without a
large batch on the same deployment, and two tenants' shares of a batch worker under contention.

``python bench/batch.py [--lines 300] [--clients 2] [--measure-s 15] [--json]``

Real parts: a local agent with built-in model-server replicas (``--ttft-ms`` per request, at most ``--max-num-seqs``
at once), a real gateway, Redis and Postgres (its own database, created and dropped here). Batches are uploaded and
created through the services, and run by ``batches.execution.run`` in this process, the code a batch worker runs;
every line goes through the gateway, its batch gate and its limits. Each deployment runs one replica
(``min_replicas = max_replicas = 1``), so the figures are those of one replica's capacity.

1. **Idle throughput**: a batch of ``--lines`` lines alone on deployment A.
2. **Interactive latency**: ``--clients`` closed-loop clients on deployment A for ``--measure-s`` seconds, alone,
   then with a large batch running on the same deployment; the batch's lines/s meanwhile. Goal: the p99 with the
   batch within 10 % of the p99 without, while the batch uses the rest of the replica.
3. **Fairness**: tenant A with three batches and tenant B with one, each tenant on its own deployment, one worker
   taking turns as the batch queue hands out runs (each for ``slice_seconds``: the same time per tenant per round);
   each tenant's share of the lines answered in ``--fair-s`` seconds (slices shortened by ``--slice-scale``).
   Goal: within 10 % of equal.

Uses ``REDIS_URL`` and ``FRONTDOOR_REDIS_PREFIX`` (a run adds its own suffix) from the environment.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BENCH_DB = os.environ.get("FRONTDOOR_BENCH_DATABASE", "bench_fd_batch")

from bench.autoscale import ControlPlane, _admin_sql, _cleanup_redis, bench_queues  # noqa: E402 - after the path
from bench.common import percentile  # noqa: E402


def _chat(gateway_url: str, key: str, model: str) -> tuple[int, float]:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}).encode()
    request = urllib.request.Request(  # noqa: S310 (our own gateway, http)
        gateway_url + "/v1/chat/completions",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (our own gateway)
            response.read()
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = int(exc.code)
    return status, (time.perf_counter() - started) * 1000


def _interactive(gateway_url: str, key: str, model: str, clients: int, seconds: float) -> list[float]:
    """``clients`` closed-loop clients for ``seconds``: the latencies (ms) of the requests answered 200."""
    latencies: list[float] = []
    failures: list[int] = []
    deadline = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < deadline:
            status, ms = _chat(gateway_url, key, model)
            (latencies.append(ms) if status == 200 else failures.append(status))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"interactive requests failed: {sorted(set(failures))}")
    return sorted(latencies)


def _batch(tenant: Any, key: Any, model: str, lines: int) -> int:
    from batches import execution, services
    from controlplane.access import Principal

    rows = [
        {
            "custom_id": f"line-{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"line {n}"}], "max_tokens": 8},
        }
        for n in range(lines)
    ]
    content = "".join(json.dumps(row) + "\n" for row in rows).encode()
    actor = Principal(None, key, None, False)
    source = services.upload_file(
        tenant, actor=actor, request_id="bench", filename="bench.jsonl", purpose="batch",
        content=io.BytesIO(content), size=len(content),
    )  # fmt: skip
    batch = services.create_batch(
        tenant, actor=actor, request_id="bench", input_file_id=source.public_id,
        endpoint="/v1/chat/completions", completion_window="24h", metadata=None,
    )  # fmt: skip
    execution.prepare(batch.pk)
    return batch.pk


def _answered(batch_id: int) -> int:
    from batches.models import Batch

    found = Batch.unscoped_objects.get(pk=batch_id)
    return found.completed + found.failed


def _public_id(batch_id: int) -> str:
    from batches.models import Batch

    return Batch.unscoped_objects.get(pk=batch_id).public_id


def _summary(latencies: list[float]) -> dict[str, float]:
    return {
        "requests": len(latencies),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "mean_ms": round(statistics.fmean(latencies), 1),
    }


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from django.conf import settings
    from django.db import connection

    from batches import execution
    from batches import services as services_batches
    from batches.tasks import slice_seconds
    from deployments import services
    from deployments.backends.local import LocalBackend
    from deployments.models import ModelDeployment
    from deployments.reconcile import engine as reconcile
    from quotas.models import Quota
    from tenants.models import ApiKey, Tenant
    from tests.support.gateway import start_gateway, stop
    from tests.support.localagent import agent_factory

    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = settings.FRONTDOOR_REDIS_PREFIX
    spec = {
        "name": "chat",
        "runtime": "builtin",
        "model": "frontdoor/sim-chat",
        "min_replicas": 1,
        "max_replicas": 1,
        "target_concurrency": args.target_concurrency,
        "args": ["--ttft-ms", str(args.ttft_ms), "--max-num-seqs", str(args.max_num_seqs)],
    }
    tenants, keys, deployments = [], [], []
    for name in ("a", "b"):
        slug = f"bench-{name}-{uuid.uuid4().hex[:4]}"
        tenant = Tenant.objects.create(slug=slug, name=slug)
        Quota.unscoped_objects.create(
            tenant=tenant, requests_per_minute=None, tokens_per_minute=None, max_concurrent_requests=None,
            batch_requests_per_minute=None, batch_tokens_per_minute=None, monthly_token_budget=None,
            max_batch_queued_lines=200 * args.lines,
        )  # fmt: skip
        tenants.append(tenant)
        keys.append(ApiKey.issue(tenant=tenant, name="bench", scopes=["inference"]))
        deployments.append(services.create_deployment(tenant, spec, actor=None))
    backend = LocalBackend(redis_url=redis_url, prefix=prefix)
    figures: dict[str, Any] = {}
    with agent_factory(redis_url, prefix, tmp) as make_agent:
        make_agent()
        gateway = start_gateway(tmp, prefix, redis_url, FRONTDOOR_KEY_PEPPER=settings.FRONTDOOR_KEY_PEPPER)
        settings.FRONTDOOR_GATEWAY_URL = gateway.url
        planes = [ControlPlane(d.pk, backend) for d in deployments]
        try:
            for plane in planes:
                plane.run_until(lambda d, r, e: r >= 1 and e, 90, "a ready replica")
            (key_a, full_a), (key_b, _) = keys
            if _chat(gateway.url, full_a, "chat")[0] != 200:
                raise SystemExit("the first request through the gateway failed")

            # 1. A batch alone on an idle deployment.
            idle = _batch(tenants[0], key_a, "chat", args.lines)
            started = time.monotonic()
            while execution.run(idle, 60.0):
                pass
            elapsed = time.monotonic() - started
            figures["idle_lines_per_s"] = round(args.lines / elapsed, 1)

            # 2. Interactive latency alone, then beside a large batch on the same deployment.
            figures["interactive_alone"] = _summary(
                _interactive(gateway.url, full_a, "chat", args.clients, args.measure_s)
            )
            large = _batch(tenants[0], key_a, "chat", 50 * args.lines)
            stop_at = time.monotonic() + args.measure_s + 5
            runner = threading.Thread(target=_run_until, args=(large, stop_at), daemon=True)
            runner.start()
            time.sleep(2)  # the batch fills the spare capacity first
            before = _answered(large)
            beside = _interactive(gateway.url, full_a, "chat", args.clients, args.measure_s)
            figures["batch_lines_per_s_beside_interactive"] = round((_answered(large) - before) / args.measure_s, 1)
            figures["interactive_with_batch"] = _summary(beside)
            runner.join()
            services_batches.cancel_batch(tenants[0], _public_id(large), actor=None, request_id="bench")
            while not execution.finalize(large):  # its lines in flight are answered first
                time.sleep(0.2)
            alone_p99 = figures["interactive_alone"]["p99_ms"]
            figures["p99_ratio_with_batch"] = round(figures["interactive_with_batch"]["p99_ms"] / alone_p99, 3)

            # 3. Two tenants on one worker: A has three batches, B one; runs take turns with per-tenant slices.
            a_batches = [_batch(tenants[0], key_a, "chat", 20 * args.lines) for _ in range(3)]
            b_batch = _batch(tenants[1], key_b, "chat", 20 * args.lines)
            queue = [*a_batches, b_batch]
            start_counts = {pk: _answered(pk) for pk in queue}
            deadline = time.monotonic() + args.fair_s
            while time.monotonic() < deadline:
                for pk in list(queue):
                    execution.run(pk, min(slice_seconds(pk) * args.slice_scale, max(deadline - time.monotonic(), 0)))
            done_a = sum(_answered(pk) - start_counts[pk] for pk in a_batches)
            done_b = _answered(b_batch) - start_counts[b_batch]
            total = max(done_a + done_b, 1)
            figures["fair_share"] = {
                "tenant_a_lines": done_a,
                "tenant_b_lines": done_b,
                "tenant_a_share": round(done_a / total, 3),
                "tenant_b_share": round(done_b / total, 3),
            }
        finally:
            for d in deployments:
                ModelDeployment.unscoped_objects.filter(pk=d.pk).update(desired_replicas=0, min_replicas=0)
                reconcile.reconcile_deployment(d.pk, backend)
            stop(gateway.proc)
            connection.close()
    return figures


def _run_until(batch_id: int, stop_at: float) -> None:
    from django.db import connection

    from batches import execution

    try:
        while time.monotonic() < stop_at and execution.run(batch_id, max(0.5, min(5.0, stop_at - time.monotonic()))):
            pass
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=300, help="lines of the idle batch")
    parser.add_argument("--clients", type=int, default=2, help="closed-loop interactive clients")
    parser.add_argument("--measure-s", type=float, default=15.0)
    parser.add_argument("--ttft-ms", type=int, default=100, help="how long each request holds its replica")
    parser.add_argument("--max-num-seqs", type=int, default=8, help="requests a replica runs at once")
    parser.add_argument("--target-concurrency", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=8, help="lines one batch run sends at once")
    parser.add_argument("--fair-s", type=float, default=30.0, help="how long the two tenants' batches run")
    parser.add_argument("--slice-scale", type=float, default=0.05, help="run slices as this fraction of 50 s")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    _admin_sql(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    _admin_sql(f'CREATE DATABASE "{BENCH_DB}"')
    base_prefix = os.environ.get("FRONTDOOR_REDIS_PREFIX", "fd-bench")
    suffix = uuid.uuid4().hex[:6]
    files = tempfile.mkdtemp(prefix="fd-bench-batch-files-")
    os.environ.update(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}",
        DJANGO_SETTINGS_MODULE="controlplane.settings",
        FRONTDOOR_BACKEND="local",
        **bench_queues(f"{base_prefix}-batch-{suffix}"),
        FRONTDOOR_BATCH_FILES_DIR=files,
        FRONTDOOR_BATCH_CONCURRENCY=str(args.concurrency),
    )
    import django

    django.setup()
    import logging

    logging.getLogger("frontdoor").setLevel(logging.WARNING)
    from django.core.management import call_command
    from django.db import connections

    try:
        call_command("migrate", verbosity=0)
        with tempfile.TemporaryDirectory(prefix="fd-bench-batch-") as tmp:
            started = time.monotonic()
            figures = run(args, Path(tmp))
            figures["run_s"] = round(time.monotonic() - started, 1)
    finally:
        _cleanup_redis()
        connections.close_all()
        _admin_sql(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')

    if args.json:
        print(json.dumps(figures, indent=2))
        return
    alone, beside = figures["interactive_alone"], figures["interactive_with_batch"]
    fair = figures["fair_share"]
    print(
        f"one replica per deployment: {args.ttft_ms} ms per request, max_num_seqs {args.max_num_seqs}, "
        f"target_concurrency {args.target_concurrency} (batch gate {0.7 * args.target_concurrency:g} in flight); "
        f"batch runs send {args.concurrency} lines at once"
    )
    print(f"{'batch alone, idle deployment (lines/s)':55s} {figures['idle_lines_per_s']}")
    print(f"{'interactive alone: p50 / p99 (ms)':55s} {alone['p50_ms']} / {alone['p99_ms']}  ({alone['requests']} req)")
    print(
        f"{'interactive beside a large batch: p50 / p99 (ms)':55s} {beside['p50_ms']} / {beside['p99_ms']}  "
        f"({beside['requests']} req); p99 ratio {figures['p99_ratio_with_batch']} (goal <= 1.10)"
    )
    print(f"{'the batch meanwhile (lines/s)':55s} {figures['batch_lines_per_s_beside_interactive']}")
    print(
        f"{'two tenants, one worker (A: 3 batches, B: 1)':55s} A {fair['tenant_a_share']:.1%} "
        f"({fair['tenant_a_lines']} lines), B {fair['tenant_b_share']:.1%} ({fair['tenant_b_lines']} lines); "
        "goal within 10 % of equal"
    )
    print(f"{'run time (s)':55s} {figures['run_s']}")


if __name__ == "__main__":
    main()
