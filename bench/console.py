"""Console benchmark: server-side render time of the busiest pages with 100 tenants × 1,000 deployments each.

Seeds its own database (created and dropped here) with bulk inserts: tenants with quotas, 1,000 deployments per
tenant, 30 days of hourly usage rollups per tenant (two keys, ten deployments), the latest 10-second SLO sample of
every deployment of the first tenant and an hour of 5-minute samples for ten deployments of each tenant. Then it
renders each page with Django's test ``Client`` (no network, no browser: server time only) several times and prints
p50/p95 in ms and the number of SQL queries (target: p95 ≤ 200 ms each).

    .venv/bin/python bench/console.py [--tenants 100] [--deployments 1000] [--runs 20] [--keep]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BENCH_DB = os.environ.get("FRONTDOOR_BENCH_DATABASE", "bench_fd_console")
TARGET_MS = 200.0


def _admin_sql(sql: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c", sql], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--deployments", type=int, default=1000, help="per tenant")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="leave the database for inspection")
    args = parser.parse_args()

    _admin_sql(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    _admin_sql(f'CREATE DATABASE "{BENCH_DB}"')
    os.environ.update(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}",
        DJANGO_SETTINGS_MODULE="controlplane.settings",
        DEBUG="false",  # as served: no SQL kept in memory, no debug templates
        # Nothing here should publish to Redis; if something does, it stays under its own prefix.
        FRONTDOOR_REDIS_PREFIX=os.environ.get("FRONTDOOR_REDIS_PREFIX", "fd-bench-console"),
        LOG_LEVEL="WARNING",
    )
    try:
        run(args.tenants, args.deployments, args.runs)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            _admin_sql(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')


def seed(n_tenants: int, per_tenant: int) -> tuple[Any, Any, str]:
    """Bulk-insert the data set; returns (staff user, owner of the first tenant, that tenant's slug)."""
    from datetime import timedelta

    from django.contrib.auth.models import User
    from django.db import connection
    from django.utils import timezone

    from deployments.models import ModelDeployment, SloSample
    from quotas.models import Quota, UsageRollup
    from tenants.models import ApiKey, Membership, Tenant

    started = time.perf_counter()
    tenants = Tenant.objects.bulk_create([Tenant(slug=f"t{n:03d}", name=f"Tenant {n:03d}") for n in range(n_tenants)])
    Quota.unscoped_objects.bulk_create(
        [Quota(tenant=t, gpus={"nvidia-h100": 64, "nvidia-l4": 32}, max_deployments=per_tenant) for t in tenants]
    )
    gpu_types = ["nvidia-h100", "nvidia-l4", ""]
    statuses = ["ready", "ready", "ready", "progressing", "pending", "degraded"]
    ModelDeployment.unscoped_objects.bulk_create(
        (
            ModelDeployment(
                tenant=t,
                name=f"model-{n:04d}",
                runtime="vllm",
                model=f"org/model-{n % 50}",
                gpu_type=gpu_types[n % 3],
                gpu_count=0 if n % 3 == 2 else 1 + n % 2,
                min_replicas=n % 2,
                max_replicas=2 + n % 3,
                desired_replicas=1 + n % 2,
                ready_replicas=1,
                status=statuses[n % len(statuses)],
                slo_p95_latency_ms=800 if n % 4 == 0 else None,
            )
            for t in tenants
            for n in range(per_tenant)
        ),
        batch_size=5000,
    )
    # Plain rows (bulk_create sends no signals): ApiKey.issue() would republish the gateway snapshot of every
    # deployment after each key. The secrets are never used here.
    ApiKey.unscoped_objects.bulk_create(
        [
            ApiKey(
                tenant=t, name=f"key-{k}", key_id=f"b{t.pk:04d}{k:03d}"[:8], secret_hash="0" * 64, scopes=["inference"]
            )
            for t in tenants
            for k in range(2)
        ]
    )
    keys: dict[int, list[ApiKey]] = {}
    for key in ApiKey.objects.unscoped().order_by("id"):
        keys.setdefault(key.tenant_id, []).append(key)
    now = timezone.now().replace(second=0, microsecond=0)
    first_ids = {
        t.pk: list(ModelDeployment.objects.for_tenant(t).order_by("id").values_list("id", "name")[:10]) for t in tenants
    }
    rollups = (
        UsageRollup(
            tenant_id=t.pk,
            api_key=keys[t.pk][hour % 2],
            minute=now - timedelta(hours=hour),
            deployment_id=first_ids[t.pk][hour % 10][0],
            deployment_name=first_ids[t.pk][hour % 10][1],
            requests=100 + hour % 17,
            errors=hour % 3,
            prompt_tokens=5000 + hour,
            completion_tokens=3000 + hour,
            latency_ms_sum=20_000,
        )
        for t in tenants
        for hour in range(30 * 24)
    )
    UsageRollup.unscoped_objects.bulk_create(rollups, batch_size=10_000)
    first = tenants[0]
    SloSample.unscoped_objects.bulk_create(
        (
            SloSample(
                tenant=first,
                deployment_id=pk,
                resolution="10s",
                interval_start=now,
                requests=50,
                errors=1,
                p95_ms=320.0,
            )
            for pk in ModelDeployment.objects.for_tenant(first).values_list("id", flat=True)
        ),
        batch_size=5000,
    )
    SloSample.unscoped_objects.bulk_create(
        (
            SloSample(
                tenant_id=t.pk,
                deployment_id=pk,
                resolution="5m",
                interval_start=now - timedelta(minutes=5 * i),
                requests=600,
                errors=i % 4,
                p95_ms=500.0 + 40 * i,
            )
            for t in tenants
            for pk, _ in first_ids[t.pk]
            for i in range(12)
        ),
        batch_size=10_000,
    )
    staff = User.objects.create_user("bench-staff", is_staff=True)
    owner = User.objects.create_user("bench-owner")
    Membership.unscoped_objects.bulk_create([Membership(tenant=first, user=owner, role="owner")])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    counts = (
        f"{Tenant.objects.count()} tenants, {ModelDeployment.objects.unscoped().count()} deployments, "
        f"{UsageRollup.objects.unscoped().count()} usage rollups, {SloSample.objects.unscoped().count()} SLO samples"
    )
    print(f"seeded {counts} in {time.perf_counter() - started:.1f} s")
    return staff, owner, first.slug


def time_page(client: Any, url: str, runs: int) -> tuple[list[float], int, int]:
    """Render ``url`` ``runs`` times after two warm-ups; returns the times (ms), the status and the query count."""
    from django.db import connection

    for _ in range(2):
        client.get(url)
    executed: list[str] = []

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        executed.append(sql)
        return execute(sql, params, many, context)

    # An execute wrapper survives the reconnects between requests (a query log would be cleared by them).
    with connection.execute_wrapper(count):
        response = client.get(url)
        if hasattr(response, "streaming_content"):
            b"".join(response.streaming_content)
    status = response.status_code
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(url)
        if hasattr(response, "streaming_content"):
            b"".join(response.streaming_content)
        times.append((time.perf_counter() - started) * 1000)
    return times, status, len(executed)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run(n_tenants: int, per_tenant: int, runs: int) -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client
    from django.urls import NoReverseMatch, reverse

    call_command("migrate", verbosity=0)
    staff, owner, slug = seed(n_tenants, per_tenant)
    owner_client, staff_client = Client(), Client()
    owner_client.force_login(owner)
    staff_client.force_login(staff)

    pages: list[tuple[str, str, tuple[str, ...], Any]] = [
        ("tenant overview", "console-overview", (slug,), owner_client),
        ("deployments list", "console-deployments", (slug,), owner_client),
        ("staff usage report", "staff-usage", (), staff_client),
        ("staff tenants", "staff-home", (), staff_client),
        ("tenant usage", "console-usage", (slug,), owner_client),
        ("staff usage CSV", "staff-usage", (), staff_client),
    ]
    print(f"\n{'page':<22} {'status':>6} {'queries':>7} {'p50 ms':>8} {'p95 ms':>8}  target p95 ≤ {TARGET_MS:.0f} ms")
    missing = []
    for label, name, url_args, client in pages:
        try:
            url = reverse(name, args=url_args)
        except NoReverseMatch:
            missing.append(f"{label} ({name})")
            continue
        if label.endswith("CSV"):
            url += "?format=csv"
        times, status, n_queries = time_page(client, url, runs)
        p50, p95 = statistics.median(times), percentile(times, 0.95)
        verdict = "ok" if p95 <= TARGET_MS else "OVER"
        print(f"{label:<22} {status:>6} {n_queries:>7} {p50:>8.1f} {p95:>8.1f}  {verdict}")
    if missing:
        print("not timed (no such URL name yet):", ", ".join(missing))


if __name__ == "__main__":
    main()
