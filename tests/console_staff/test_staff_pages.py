"""The staff tenants, usage and capacity pages: figures from the database, in a bounded number of queries."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from deployments.models import ModelDeployment, SloSample
from quotas import reports
from quotas.models import Quota, UsageRollup
from tenants.models import Tenant
from tests.support.staff import make_deployment


def many_tenants(count: int) -> list[Tenant]:
    """``count`` tenants, each with a GPU quota, two GPU deployments, usage this month and SLO samples."""
    tenants = Tenant.objects.bulk_create([Tenant(slug=f"t{n:03d}", name=f"Tenant {n}") for n in range(count)])
    Quota.unscoped_objects.bulk_create([Quota(tenant=t, gpus={"nvidia-h100": 4}) for t in tenants])
    deployments = ModelDeployment.unscoped_objects.bulk_create(
        [
            ModelDeployment(
                tenant=t,
                name=f"d{n}",
                model="m",
                gpu_type="nvidia-h100",
                gpu_count=1,
                max_replicas=2,
                desired_replicas=1,
                slo_p95_latency_ms=500,
            )
            for t in tenants
            for n in range(2)
        ]
    )
    now = timezone.now()
    UsageRollup.unscoped_objects.bulk_create(
        [UsageRollup(tenant=t, minute=reports.month_start(), requests=3, prompt_tokens=5) for t in tenants]
    )
    SloSample.unscoped_objects.bulk_create(
        [
            SloSample(
                tenant_id=d.tenant_id,
                deployment=d,
                resolution="5m",
                interval_start=now - timedelta(minutes=5),
                requests=10,
                p95_ms=100,
            )
            for d in deployments
        ]
    )
    return tenants


@pytest.mark.parametrize("count", [3, 60])
def test_it_lists_tenants_in_a_bounded_number_of_queries(
    count: int, staff: User, client_as: Callable[[User | None], Client], django_assert_max_num_queries: Any
) -> None:
    many_tenants(count)
    client = client_as(staff)
    with django_assert_max_num_queries(12):
        response = client.get("/staff/")
    assert response.status_code == 200
    assert response.content.decode().count("Edit quota") == min(count, 50)  # one page of 50


def test_it_shows_quota_allocated_and_in_use_gpus(
    staff: User, acme: Tenant, client_as: Callable[[User | None], Client]
) -> None:
    Quota.objects.for_tenant(acme).update(gpus={"nvidia-h100": 8, "nvidia-l4": 2})
    make_deployment(acme, "big", gpu_type="nvidia-h100", gpu_count=2, max_replicas=3, desired_replicas=1)
    make_deployment(acme, "gone", gpu_type="nvidia-h100", gpu_count=4, max_replicas=4, desired_state="deleting")
    make_deployment(acme, "l4", gpu_type="nvidia-a100", gpu_count=1, max_replicas=2, desired_replicas=2)
    page = client_as(staff).get("/staff/").content.decode()
    assert "<span>nvidia-h100</span> 8 · 6 · 2" in page  # quota 8, 2 GPUs × 3 max replicas, 2 × 1 desired
    assert "<span>nvidia-l4</span> 2 · 0 · 0" in page
    assert "<span>nvidia-a100</span> 0 · 2 · 2 <strong>over quota</strong>" in page


def test_it_shows_usage_this_month_and_slo_attainment(
    staff: User, acme: Tenant, globex: Tenant, client_as: Callable[[User | None], Client]
) -> None:
    fast = make_deployment(acme, "fast", slo_p95_latency_ms=200, slo_error_rate=0.1)
    now = timezone.now()
    for minutes, p95, errors in ((5, 150, 0), (10, 150, 5), (15, 300, 0), (20, 100, 1)):  # met, errors, slow, met
        SloSample.unscoped_objects.create(tenant=acme, deployment=fast, resolution="5m", requests=20, errors=errors,
                                          p95_ms=p95, interval_start=now - timedelta(minutes=minutes))  # fmt: skip
    UsageRollup.unscoped_objects.create(tenant=acme, minute=now, requests=7, prompt_tokens=100, completion_tokens=23)
    UsageRollup.unscoped_objects.create(tenant=acme, minute=reports.month_start() - timedelta(minutes=1), requests=99)
    assert reports.slo_attainment_by_tenant([acme.pk, globex.pk]) == {acme.pk: {"intervals": 4, "met": 2, "ratio": 0.5}}
    assert reports.month_usage_by_tenant([acme.pk])[acme.pk]["requests"] == 7
    page = client_as(staff).get("/staff/").content.decode()
    assert "50%" in page and "2 of 4 intervals" in page
    assert "no data" in page  # globex has no SLO samples
    assert ">123<" in page  # acme's tokens this month


def test_it_searches_tenants(
    staff: User, acme: Tenant, globex: Tenant, client_as: Callable[[User | None], Client]
) -> None:
    page = client_as(staff).get("/staff/?q=glo").content.decode()
    assert "Globex" in page and "Acme" not in page.split("<main", 1)[1]
    empty = client_as(staff).get("/staff/?q=zzz").content.decode()
    assert "Show every tenant" in empty


def test_it_renders_only_the_table_for_htmx(
    staff: User, acme: Tenant, client_as: Callable[[User | None], Client]
) -> None:
    response = client_as(staff).get("/staff/", HTTP_HX_REQUEST="true")
    assert "<html" not in response.content.decode()
    assert "Edit quota" in response.content.decode()


def test_it_reports_usage_of_every_tenant_with_charts(
    staff: User, acme_usage: list[UsageRollup], globex_usage: list[UsageRollup],
    client_as: Callable[[User | None], Client], django_assert_max_num_queries: Any,
) -> None:  # fmt: skip
    client = client_as(staff)
    with django_assert_max_num_queries(12):
        page = client.get("/staff/usage/").content.decode()
    total = sum(r.requests for r in acme_usage + globex_usage)
    assert f"<dd>{total}</dd>" in page
    assert page.count("<svg") == 3  # requests per day, tokens per day, tokens per tenant
    assert "Tokens per tenant" in page and "globex" in page


def test_it_explains_an_empty_report(staff: User, client_as: Callable[[User | None], Client]) -> None:
    page = client_as(staff).get("/staff/usage/").content.decode()
    assert "No tenant made a request" in page


def test_it_shows_a_bad_range_beside_the_form(staff: User, client_as: Callable[[User | None], Client]) -> None:
    response = client_as(staff).get("/staff/usage/?from=2024-05-01&to=2024-04-01")
    assert response.status_code == 200
    assert "is after" in response.content.decode()


def test_it_compares_gpu_allocation_with_cluster_capacity(
    staff: User, acme: Tenant, client_as: Callable[[User | None], Client], settings: Any
) -> None:
    settings.FRONTDOOR_CLUSTER_GPU_CAPACITY = {"nvidia-h100": 10, "nvidia-l4": 4}
    Quota.objects.for_tenant(acme).update(gpus={"nvidia-h100": 16})
    make_deployment(acme, "a", gpu_type="nvidia-h100", gpu_count=4, max_replicas=3, desired_replicas=2)
    rows = {row["gpu_type"]: row for row in reports.capacity_rows()}
    assert (rows["nvidia-h100"]["allocated"], rows["nvidia-h100"]["in_use"], rows["nvidia-h100"]["free"]) == (12, 8, 2)
    assert rows["nvidia-h100"]["overcommitted"] and rows["nvidia-h100"]["granted"] == 16
    assert rows["nvidia-l4"]["allocated"] == 0 and rows["nvidia-l4"]["free"] == 4
    page = client_as(staff).get("/staff/capacity/").content.decode()
    assert "overcommitted" in page and "<svg" in page and "No cluster capacity is configured" not in page


def test_it_says_when_no_capacity_is_configured(
    staff: User, client_as: Callable[[User | None], Client], settings: Any
) -> None:
    settings.FRONTDOOR_CLUSTER_GPU_CAPACITY = {}
    assert "No cluster capacity is configured" in client_as(staff).get("/staff/capacity/").content.decode()
