"""No N+1: the overview and list pages run a fixed number of queries with 1,000 deployments in a tenant."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from pytest_django import DjangoAssertNumQueries

from deployments.models import ModelDeployment, SloSample
from quotas.models import UsageRollup
from tenants.models import Tenant

MAX_QUERIES = 16


@pytest.fixture
def thousand(acme: Tenant) -> list[ModelDeployment]:
    deployments = ModelDeployment.unscoped_objects.bulk_create(
        ModelDeployment(
            tenant=acme,
            name=f"dep-{i:04d}",
            model="m",
            status="ready",
            ready_replicas=1,
            desired_replicas=1,
            gpu_type="nvidia-h100" if i % 3 == 0 else "",
            gpu_count=1 if i % 3 == 0 else 0,
        )
        for i in range(1000)
    )
    now = timezone.now()
    SloSample.unscoped_objects.bulk_create(
        SloSample(
            tenant=acme, deployment=d, interval_start=now - timedelta(seconds=s), requests=50, errors=1, p95_ms=80.0
        )
        for d in deployments[:200]
        for s in (10, 20)
    )
    UsageRollup.unscoped_objects.bulk_create(
        UsageRollup(
            tenant=acme,
            minute=now.replace(second=0, microsecond=0),
            deployment_id=d.pk,
            deployment_name=d.name,
            requests=3,
            prompt_tokens=10,
            completion_tokens=20,
        )
        for d in deployments[:300]
    )
    return deployments


@pytest.mark.parametrize("path", ["/t/acme/", "/t/acme/deployments/", "/t/acme/deployments/?status=ready&q=dep-0"])
def test_it_runs_a_fixed_number_of_queries_with_1000_deployments(
    console: Callable[[User | None], Client],
    bob: User,
    thousand: list[ModelDeployment],
    django_assert_max_num_queries: Callable[[int], DjangoAssertNumQueries],
    path: str,
) -> None:
    client = console(bob)
    with django_assert_max_num_queries(MAX_QUERIES):
        response = client.get(path)
    assert response.status_code == 200
    assert len(response.context["page"]) == 50 and response.context["page"].paginator.count > 50


def test_it_shows_live_figures_on_the_overview(
    console: Callable[[User | None], Client], bob: User, thousand: list[ModelDeployment]
) -> None:
    response = console(bob).get("/t/acme/")
    first, figures = response.context["rows"][0]
    assert first.name == "dep-0000"
    assert figures == {"rps": 5.0, "p95_ms": 80.0, "error_rate": 0.02, "tokens_today": 30}
    bars = {bar["label"]: bar for bar in response.context["bars"]}
    assert bars["Deployments"]["used"] == 1000 and bars["Tokens this month"]["used"] == 300 * 30
