"""The capacity chart shows what quotas grant: GPUs granted with nothing deployed are bars, never "No usage"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import User
from django.test import Client

from quotas.models import Quota
from tenants.models import Tenant


def test_it_charts_the_gpus_quotas_grant_when_nothing_is_deployed(
    acme: Tenant, globex: Tenant, staff: User, client_as: Callable[[User | None], Client], settings: Any
) -> None:
    settings.FRONTDOOR_CLUSTER_GPU_CAPACITY = {}
    Quota.objects.for_tenant(acme).update(gpus={"nvidia-h100": 8})
    Quota.objects.for_tenant(globex).update(gpus={"nvidia-h100": 4, "nvidia-l4": 2})
    page = client_as(staff).get("/staff/capacity/").content.decode()
    figure = page.split('<figure class="card">', 1)[1].split("</figure>", 1)[0]
    assert "<svg" in figure and "No usage" not in page
    assert "granted by quotas" in figure  # a series of its own, next to capacity, allocated and in use


def test_it_draws_no_chart_when_every_figure_is_zero(
    acme: Tenant, staff: User, client_as: Callable[[User | None], Client], settings: Any
) -> None:
    settings.FRONTDOOR_CLUSTER_GPU_CAPACITY = {}
    Quota.objects.for_tenant(acme).update(gpus={"nvidia-l4": 0})
    page = client_as(staff).get("/staff/capacity/").content.decode()
    assert "<svg" not in page and "No usage" not in page
    assert "Every figure below is 0" in page and '<th scope="row">nvidia-l4</th>' in page
