"""SLO charts on the deployment page: an htmx partial of server-rendered SVG, by default over the last hour of 10 s
samples (other ranges: tests/console/test_charts_slo.py)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from deployments.models import ModelDeployment, SloSample
from tenants.models import Tenant

pytestmark = pytest.mark.django_db

PARTIAL = "/t/acme/deployments/chat/slo/"
HTMX = {"HX-Request": "true"}
SVG = "{http://www.w3.org/2000/svg}"
Console = Callable[[User | None], Client]


def add_samples(deployment: ModelDeployment, count: int, *, ttft: bool = True) -> list[SloSample]:
    """``count`` 10 s samples ending a minute ago, with rising traffic, a few errors and latency figures."""
    newest = datetime.fromtimestamp(int(timezone.now().timestamp()) // 10 * 10 - 60, tz=UTC)
    return SloSample.unscoped_objects.bulk_create(
        SloSample(
            tenant_id=deployment.tenant_id,
            deployment=deployment,
            interval_start=newest - timedelta(seconds=10 * i),
            requests=20 + i,
            errors=i % 3,
            latency_ms_sum=(20 + i) * 90,
            p95_ms=100.0 + i,
            ttft_count=(20 + i) if ttft else 0,
            ttft_p95_ms=40.0 + i if ttft else None,
            buckets={"le_100": 10 + i, "le_250": 20 + i, "le_inf": 20 + i},
        )
        for i in range(count)
    )


def charts(html: str) -> dict[str, ET.Element]:
    """Each ``<svg>`` of the page, parsed, by its id (``slo-requests`` …)."""
    found = {}
    for text in re.findall(r"<svg\b.*?</svg>", html, flags=re.S):
        svg = ET.fromstring(text)  # noqa: S314 - our own output, not untrusted input
        title = svg.find(f"{SVG}title")
        assert title is not None
        found[str(title.get("id")).removesuffix("-title")] = svg
    return found


def texts(svg: ET.Element) -> list[str]:
    return [t.text or "" for t in svg.iter(f"{SVG}text")]


def plotted(svg: ET.Element) -> list[list[list[float]]]:
    """The y coordinates of each line (one per series), one list per unbroken segment (``M`` subpath) of it."""
    paths = [str(path.get("d")) for path in svg.iter(f"{SVG}path") if "line" in str(path.get("class"))]
    return [[[float(y) for y in re.findall(r",([\d.]+)", run)] for run in d.split("M")[1:]] for d in paths]


@pytest.fixture
def chat(acme: Tenant, make_deployment: Callable[..., ModelDeployment]) -> ModelDeployment:
    return make_deployment(acme, "chat", slo_p95_latency_ms=500)


def test_it_draws_requests_errors_latency_with_its_objective_and_ttft(
    console: Console, vera: User, chat: ModelDeployment
) -> None:
    samples = add_samples(chat, 12)
    response = console(vera).get(PARTIAL, headers=HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html  # the partial alone
    found = charts(html)
    assert set(found) == {"slo-requests", "slo-latency", "slo-ttft"}
    requests_lines = plotted(found["slo-requests"])
    assert len(requests_lines) == 2 and found["slo-requests"].get("data-series") == "requests|errors"
    # An hour of 10 s slots, idle ones at 0 requests; only the newest, maybe not collected yet, are left out.
    assert all(len(line) == 1 and 358 <= len(line[0]) <= 360 for line in requests_lines)
    baseline = max(requests_lines[0][0])
    assert sum(1 for y in requests_lines[0][0] if y < baseline) == len(samples)  # one raised point per sample
    latency_lines = plotted(found["slo-latency"])
    assert len(latency_lines) == 1 and [len(segment) for segment in latency_lines[0]] == [len(samples)]
    assert "objective 500 ms, above the chart" in texts(found["slo-latency"])  # the data stays below 120 ms
    assert len(plotted(found["slo-ttft"])) == 1
    assert response.context["slo_totals"]["requests"] == sum(s.requests for s in samples)
    assert response.context["slo_totals"]["errors"] == sum(s.errors for s in samples)


def test_it_leaves_out_the_objective_and_ttft_when_there_are_none(
    console: Console, vera: User, acme: Tenant, make_deployment: Callable[..., ModelDeployment]
) -> None:
    add_samples(make_deployment(acme, "chat"), 5, ttft=False)
    html = console(vera).get(PARTIAL, headers=HTMX).content.decode()
    found = charts(html)
    assert set(found) == {"slo-requests", "slo-latency"}
    assert len(plotted(found["slo-latency"])) == 1
    assert not any("objective" in str(g.get("class")) for g in found["slo-latency"].iter(f"{SVG}g"))
    assert 'data-testid="no-ttft"' in html


def test_it_shows_an_empty_state_without_samples(console: Console, vera: User, chat: ModelDeployment) -> None:
    old = add_samples(chat, 1)[0]
    SloSample.unscoped_objects.filter(pk=old.pk).update(interval_start=timezone.now() - timedelta(hours=2))
    html = console(vera).get(PARTIAL, headers=HTMX).content.decode()
    assert 'data-testid="slo-empty"' in html and "<svg" not in html


def test_the_detail_page_loads_the_partial_with_htmx_and_polls_it(
    console: Console, vera: User, chat: ModelDeployment
) -> None:
    add_samples(chat, 3)
    page = console(vera).get("/t/acme/deployments/chat/").content.decode()
    assert f'hx-get="{PARTIAL}"' in page and 'hx-trigger="load, every 10s"' in page
    assert "<svg" not in page  # the page itself does not query the samples
    full = console(vera).get(PARTIAL)  # without htmx: the page with the charts in place
    assert full.status_code == 200 and "<html" in full.content.decode()
    assert set(charts(full.content.decode())) == {"slo-requests", "slo-latency", "slo-ttft"}


def test_it_hides_other_tenants_charts(console: Console, charlie: User, chat: ModelDeployment) -> None:
    add_samples(chat, 3)
    assert console(charlie).get(PARTIAL, headers=HTMX).status_code == 404


def test_it_runs_the_same_queries_for_a_few_samples_as_for_an_hour(
    console: Console, vera: User, acme: Tenant, make_deployment: Callable[..., ModelDeployment]
) -> None:
    client = console(vera)
    few, full = make_deployment(acme, "few"), make_deployment(acme, "full")
    add_samples(few, 3)
    add_samples(full, 354)
    counts = []
    for name in ("few", "full"):
        with CaptureQueriesContext(connection) as queries:
            assert client.get(f"/t/acme/deployments/{name}/slo/", headers=HTMX).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1]
