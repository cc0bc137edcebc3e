"""The SLO charts' range picker and data: the range in the URL (checked against a fixed set), 5 min rows for long
ranges with the newest spans from 10 s rows, hours for 7 days, canary against stable lines while two revisions take
traffic, a data-table row per point, and the same queries whatever the range."""

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

from deployments.console.slo import RANGES
from deployments.models import ModelDeployment, Revision, SloSample
from tenants.models import Tenant

pytestmark = pytest.mark.django_db

PARTIAL = "/t/acme/deployments/chat/slo/"
PAGE = "/t/acme/deployments/chat/"
HTMX = {"HX-Request": "true"}
SVG = "{http://www.w3.org/2000/svg}"
Console = Callable[[User | None], Client]
TEN, FIVE = SloSample.Resolution.TEN_SECONDS, SloSample.Resolution.FIVE_MINUTES


def floor(seconds: int, ago: int = 0) -> datetime:
    """The start of the ``seconds``-long interval ``ago`` intervals before the one in progress."""
    now = int(timezone.now().timestamp())
    return datetime.fromtimestamp(now // seconds * seconds - ago * seconds, tz=UTC)


def sample(
    deployment: ModelDeployment,
    start: datetime,
    resolution: str = TEN,
    *,
    revision: Revision | None = None,
    requests: int = 10,
    p95: float = 100.0,
) -> SloSample:
    """A sample whose histogram agrees with its p95: every request in the bucket up to 250 ms."""
    return SloSample(
        tenant_id=deployment.tenant_id,
        deployment=deployment,
        revision=revision,
        resolution=resolution,
        interval_start=start,
        requests=requests,
        errors=1,
        latency_ms_sum=requests * int(p95),
        p95_ms=p95,
        buckets={"le_100": 0, "le_250": requests, "le_inf": requests},
    )


def charts(html: str) -> dict[str, ET.Element]:
    found = {}
    for text in re.findall(r"<svg\b.*?</svg>", html, flags=re.S):
        svg = ET.fromstring(text)  # noqa: S314 - our own output, not untrusted input
        found[str(svg.get("id"))] = svg
    return found


def points(svg: ET.Element) -> list[ET.Element]:
    return [g for g in svg.iter(f"{SVG}g") if g.get("class") == "chart-point"]


def get(client: Client, url: str, **headers: str) -> tuple[str, dict[str, ET.Element]]:
    response = client.get(url, headers={**HTMX, **headers})
    assert response.status_code == 200
    html = response.content.decode()
    return html, charts(html)


@pytest.fixture
def chat(acme: Tenant, make_deployment: Callable[..., ModelDeployment]) -> ModelDeployment:
    return make_deployment(acme, "chat", slo_p95_latency_ms=500)


def test_it_offers_every_range_as_a_link_that_keeps_it_in_the_url(
    console: Console, vera: User, chat: ModelDeployment
) -> None:
    SloSample.unscoped_objects.bulk_create([sample(chat, floor(10, 6))])
    html, _ = get(console(vera), f"{PARTIAL}?range=6h")
    for key in RANGES:
        link = re.search(rf'<a id="slo-range-{key}"[^>]*>', html)
        assert link is not None
        assert f'href="{PARTIAL}?range={key}"' in link[0] and f'hx-get="{PARTIAL}?range={key}"' in link[0]
        assert f'hx-push-url="{PAGE}?range={key}"' in link[0]
        assert ('aria-current="true"' in link[0]) == (key == "6h")
    assert "Last 6 hours" in html


def test_without_htmx_a_range_link_is_the_page_with_those_charts(
    console: Console, vera: User, chat: ModelDeployment
) -> None:
    SloSample.unscoped_objects.bulk_create([sample(chat, floor(300, 3), FIVE)])
    response = console(vera).get(f"{PARTIAL}?range=24h")
    assert response.status_code == 200 and "<html" in response.content.decode()
    assert response.context["slo_range"] is RANGES["24h"]
    assert len(points(charts(response.content.decode())["slo-requests"])) >= 287  # a day of 5 min points


@pytest.mark.parametrize("value", ["2y", "", "1H", "<script>", "1h" * 500])
def test_an_unknown_range_is_the_default_hour(console: Console, vera: User, chat: ModelDeployment, value: str) -> None:
    SloSample.unscoped_objects.bulk_create([sample(chat, floor(10, 6))])
    response = console(vera).get(PARTIAL, {"range": value}, headers=HTMX)
    assert response.status_code == 200 and response.context["slo_range"] is RANGES["1h"]
    assert len(points(charts(response.content.decode())["slo-requests"])) >= 358  # an hour of 10 s points


def test_polling_keeps_the_range_of_the_pages_url(console: Console, vera: User, chat: ModelDeployment) -> None:
    SloSample.unscoped_objects.bulk_create([sample(chat, floor(300, 2), FIVE)])
    response = console(vera).get(PARTIAL, headers={**HTMX, "HX-Current-URL": f"http://testserver{PAGE}?range=24h"})
    assert response.context["slo_range"] is RANGES["24h"]
    assert 'aria-current="true">24 h</a>' in response.content.decode()
    for broken in ("http://[::1", "no url at all", "http://testserver/?" + "&".join(["range=7d"] * 50)):
        response = console(vera).get(PARTIAL, headers={**HTMX, "HX-Current-URL": broken})
        assert response.status_code == 200 and response.context["slo_range"] is RANGES["1h"]
    explicit = console(vera).get(f"{PARTIAL}?range=15m", headers={**HTMX, "HX-Current-URL": f"{PAGE}?range=7d"})
    assert explicit.context["slo_range"] is RANGES["15m"]  # the link's own range wins


def test_six_hours_read_5_min_rows_and_take_the_newest_spans_from_10_s_rows(
    console: Console, vera: User, chat: ModelDeployment
) -> None:
    newest_span = floor(300, 1)  # complete, but not downsampled yet
    rows = [sample(chat, floor(300, ago), FIVE, requests=100) for ago in (2, 3, 10)]
    rows += [sample(chat, newest_span + timedelta(seconds=10 * i), requests=5) for i in range(30)]
    # 10 s rows of a span that has its 5 min row: the 5 min row wins, they are not counted twice.
    rows += [sample(chat, floor(300, 2) + timedelta(seconds=10 * i), requests=7) for i in range(30)]
    SloSample.unscoped_objects.bulk_create(rows)
    response = console(vera).get(f"{PARTIAL}?range=6h", headers=HTMX)
    found = charts(response.content.decode())
    assert response.context["slo_totals"]["requests"] == 3 * 100 + 30 * 5
    assert len(points(found["slo-requests"])) >= 71  # 72 spans of 5 min, the newest maybe not collected yet
    latency = points(found["slo-latency"])
    # Three 5 min rows read as they are, and one span merged from 10 s rows (its histogram: 242.5 ms at p95).
    assert [g.get("data-values") for g in latency] == ["100 ms"] * 3 + ["242 ms"]
    assert latency[-1].get("data-time") == newest_span.strftime("%b %d %H:%M")
    requests = {g.get("data-time"): g.get("data-values") for g in points(found["slo-requests"])}
    assert requests[newest_span.strftime("%b %d %H:%M")] == "150|30"  # 30 rows of 5 requests, 1 error each


def test_seven_days_are_hours_merged_from_5_min_rows(console: Console, vera: User, chat: ModelDeployment) -> None:
    hour = floor(3600, 5)
    rows = [sample(chat, hour + timedelta(minutes=5 * i), FIVE, requests=10, p95=200.0) for i in range(12)]
    SloSample.unscoped_objects.bulk_create(rows)
    response = console(vera).get(f"{PARTIAL}?range=7d", headers=HTMX)
    found = charts(response.content.decode())
    assert len(points(found["slo-requests"])) >= 167  # 168 hours
    (point,) = points(found["slo-latency"])
    assert point.get("data-time") == hour.strftime("%b %d %H:%M")
    assert point.get("data-values") == "242 ms"  # the merged histogram's p95: 95 % of the way through 100-250 ms
    assert [p.get("data-values") for p in points(found["slo-requests"]) if p.get("data-values") != "0|0"] == ["120|12"]


def test_while_two_revisions_take_traffic_each_gets_its_line(
    console: Console, vera: User, chat: ModelDeployment
) -> None:
    stable = Revision.objects.for_tenant(chat.tenant_id).get(deployment=chat, number=1)
    Revision.unscoped_objects.filter(pk=stable.pk).update(weight=90)
    canary = Revision.unscoped_objects.create(deployment=chat, number=2, spec=stable.spec, weight=10)
    rows = []
    for i in range(1, 7):
        at = floor(10, i + 2)
        rows += [sample(chat, at, requests=20, p95=120.0), sample(chat, at, revision=stable, requests=18, p95=100.0)]
        rows.append(sample(chat, at, revision=canary, requests=2, p95=300.0))
    SloSample.unscoped_objects.bulk_create(rows)
    html, found = get(console(vera), PARTIAL)
    assert found["slo-requests"].get("data-series") == "r2 canary requests|r1 stable requests|errors"
    assert found["slo-latency"].get("data-series") == "r2 canary|r1 stable"
    assert {g.get("data-values") for g in points(found["slo-latency"])} == {"300 ms|100 ms"}
    assert 'data-testid="slo-split"' in html and "<strong>r2</strong> (canary, 10 % of traffic)" in html

    Revision.unscoped_objects.filter(pk=canary.pk).update(weight=0)
    Revision.unscoped_objects.filter(pk=stable.pk).update(weight=100)
    html, found = get(console(vera), PARTIAL)
    assert found["slo-latency"].get("data-series") == "p95" and 'data-testid="slo-split"' not in html
    assert {g.get("data-values") for g in points(found["slo-latency"])} == {"120 ms"}  # all revisions together


def test_an_interval_not_collected_yet_is_no_zero(console: Console, vera: User, chat: ModelDeployment) -> None:
    SloSample.unscoped_objects.bulk_create([sample(chat, floor(10, 30))])
    _, found = get(console(vera), f"{PARTIAL}?range=15m")
    requests = points(found["slo-requests"])
    assert requests[0].get("data-values") == "0|0"  # idle long ago: nothing served, a true zero
    newest = datetime.fromtimestamp(int(timezone.now().timestamp()) // 10 * 10 - 10, tz=UTC).strftime("%H:%M:%S")
    assert requests[-1].get("data-time") != newest or requests[-1].get("data-values") != "0|0"


def test_each_chart_has_a_table_row_per_point(console: Console, vera: User, chat: ModelDeployment) -> None:
    SloSample.unscoped_objects.bulk_create([sample(chat, floor(10, i)) for i in range(3, 40, 2)])
    html, found = get(console(vera), PARTIAL)
    for chart_id in ("slo-requests", "slo-latency"):
        table = re.search(rf'<details class="chart-data" id="{chart_id}-data">.*?</details>', html, flags=re.S)
        assert table is not None
        assert table[0].count('<tr><th scope="row" class="chart-row">') == len(points(found[chart_id])) > 0
    assert len(points(found["slo-latency"])) == 19  # gaps between the samples have no point


def test_it_runs_the_same_queries_for_every_range_and_a_canary(
    console: Console, vera: User, chat: ModelDeployment
) -> None:
    client = console(vera)
    rows = [sample(chat, floor(10, i)) for i in range(2, 300)]
    rows += [sample(chat, floor(300, i), FIVE) for i in range(1, 2000)]
    SloSample.unscoped_objects.bulk_create(rows)
    counts = {}
    for key in RANGES:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(f"{PARTIAL}?range={key}", headers=HTMX).status_code == 200
        counts[key] = len(queries)
    stable = Revision.objects.for_tenant(chat.tenant_id).get(deployment=chat, number=1)
    Revision.unscoped_objects.filter(pk=stable.pk).update(weight=50)
    Revision.unscoped_objects.create(deployment=chat, number=2, spec=stable.spec, weight=50)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(PARTIAL, headers=HTMX).status_code == 200
    counts["canary"] = len(queries)
    assert len(set(counts.values())) == 1, counts
