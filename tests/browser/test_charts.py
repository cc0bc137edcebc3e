"""The charts in a real browser. The deployment's SLO charts: the range picker swaps the charts and keeps the range
in the URL (a reload keeps it), the latency line breaks where nothing was served, hovering or the arrow keys show a
point's values, each chart has its data table, and at 390 px no label overlaps another and nothing scrolls sideways;
the usage page's charts at 390 px too.

The SLO samples a collector would write are written here directly: these tests are about what the page draws.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from deployments import services
from deployments.models import ModelDeployment, SloSample
from tenants.models import Tenant
from tests.support.browser import PHONE
from tests.support.staff import seed_usage

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PAGE = "/t/acme/deployments/chat/"

# Pairs of shown SVG labels of one chart whose boxes overlap (1 px of slack), and text rendered under 9 px high.
OVERLAPS = """() => {
  const problems = [];
  for (const svg of document.querySelectorAll("svg.chart")) {
    const boxes = [...svg.querySelectorAll("text")]
      .map(t => ({text: t.textContent.trim(), box: t.getBoundingClientRect()}))
      .filter(({text, box}) => text && box.width > 0);  // hidden ones (display: none, here or above) have no box
    for (const {text, box} of boxes) if (box.height < 9) problems.push(`${svg.id}: "${text}" is ${box.height} px high`);
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i].box, b = boxes[j].box;
      if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1)
        problems.push(`${svg.id}: "${boxes[i].text}" overlaps "${boxes[j].text}"`);
    }
  }
  return problems;
}"""
SIDEWAYS = "document.documentElement.scrollWidth - document.documentElement.clientWidth"


def at(seconds: int, ago: int) -> datetime:
    now = int(timezone.now().timestamp())
    return datetime.fromtimestamp(now // seconds * seconds - ago * seconds, tz=UTC)


def sample(deployment: ModelDeployment, start: datetime, resolution: str, requests: int, p95: float) -> SloSample:
    return SloSample(
        tenant_id=deployment.tenant_id,
        deployment=deployment,
        resolution=resolution,
        interval_start=start,
        requests=requests,
        errors=requests // 10,
        latency_ms_sum=requests * int(p95),
        p95_ms=p95,
        buckets={"le_100": 0, "le_250": requests, "le_inf": requests},
    )


@pytest.fixture
def chat(acme: Tenant) -> ModelDeployment:
    """``chat`` with a 500 ms objective, traffic in two bursts over the last hour (idle between them) and 5 min rows
    over the last 6 hours."""
    deployment = services.create_deployment(
        acme, {"name": "chat", "model": "frontdoor/sim-chat", "slo_p95_latency_ms": 500}, actor=None
    )
    ten = SloSample.Resolution.TEN_SECONDS
    rows = [sample(deployment, at(10, ago), ten, 20 + ago % 7, 90.0 + ago % 13) for ago in range(3, 60)]
    rows += [sample(deployment, at(10, ago), ten, 40, 180.0 + ago % 11) for ago in range(120, 200)]
    five = SloSample.Resolution.FIVE_MINUTES
    rows += [sample(deployment, at(300, ago), five, 600 + 10 * ago, 120.0 + ago) for ago in range(1, 70, 2)]
    SloSample.unscoped_objects.bulk_create(rows)
    return deployment


def open_charts(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, user: User, query: str = ""
) -> None:
    from playwright.sync_api import expect

    sign_in(page, user)
    page.goto(f"{console_url}{PAGE}{query}")
    expect(page.locator("#slo-latency .chart-point").first).to_be_attached()


def test_the_range_picker_swaps_the_charts_and_keeps_the_range_in_the_url(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, vera: User, chat: ModelDeployment
) -> None:
    from playwright.sync_api import expect

    open_charts(page, sign_in, console_url, vera)
    picker = page.get_by_role("navigation", name="Chart range")
    expect(picker.get_by_role("link", name="1 h")).to_have_attribute("aria-current", "true")
    hour_points = page.locator("#slo-requests .chart-point").count()
    assert hour_points >= 358  # 10 s points

    picker.get_by_role("link", name="6 h").click()
    page.wait_for_url("**/deployments/chat/?range=6h")
    expect(picker.get_by_role("link", name="6 h")).to_have_attribute("aria-current", "true")
    expect(page.get_by_test_id("slo-range")).to_contain_text("Last 6 hours · a point per 5 min")
    assert 71 <= page.locator("#slo-requests .chart-point").count() <= 72
    ticks = page.locator("#slo-requests .tick-x").all_text_contents()
    assert ticks and all(t.endswith(":00") or t[:3].isalpha() for t in ticks)  # whole hours, or a date at midnight
    expect(picker.get_by_role("link", name="6 h")).to_be_focused()  # the chosen link keeps the focus

    page.reload()  # the range lives in the URL: the page's own request (and every refresh) asks for it
    expect(page.locator("#slo-latency .chart-point").first).to_be_attached()
    expect(picker.get_by_role("link", name="6 h")).to_have_attribute("aria-current", "true")
    assert page.locator("#slo-requests .chart-point").count() <= 72


def test_hovering_or_the_arrow_keys_show_a_points_values_and_the_line_breaks_where_nothing_was_served(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, vera: User, chat: ModelDeployment
) -> None:
    from playwright.sync_api import expect

    open_charts(page, sign_in, console_url, vera)
    latency = page.locator("#slo-latency")
    runs = latency.locator("path.line").get_attribute("d") or ""
    assert runs.count("M") == 2  # two bursts, nothing drawn between them

    box = latency.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.5)
    tip = page.locator("#slo-latency + .chart-tip")
    expect(tip).to_be_visible()
    expect(tip).to_contain_text("UTC")
    expect(tip).to_contain_text("p95: ")
    assert tip.inner_text().strip().endswith("ms")
    expect(latency.locator(".chart-crosshair")).not_to_have_css("display", "none")
    expect(latency.locator(".chart-crosshair circle")).to_have_count(1)  # a dot on the one line
    # Between the bursts the crosshair snaps to a served point: there is no zero to show.
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    expect(tip).not_to_contain_text("p95: 0 ms")

    page.mouse.move(0, 0)
    expect(tip).to_be_hidden()
    latency.focus()
    expect(tip).to_be_visible()
    newest = tip.text_content() or ""
    page.keyboard.press("ArrowLeft")
    expect(tip).not_to_have_text(newest)
    page.keyboard.press("End")
    expect(tip).to_have_text(newest)
    page.keyboard.press("Escape")
    expect(tip).to_be_hidden()


def test_each_chart_has_a_data_table_with_a_row_per_point(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, vera: User, chat: ModelDeployment
) -> None:
    from playwright.sync_api import expect

    open_charts(page, sign_in, console_url, vera, "?range=15m")
    for chart_id in ("slo-requests", "slo-latency"):
        details = page.locator(f"#{chart_id}-data")
        details.locator("summary").click()
        rows = details.locator("tbody tr")
        expect(rows.first).to_be_visible()
        assert rows.count() == page.locator(f"#{chart_id} .chart-point").count() > 0
        assert details.locator("thead th").first.inner_text() == "Time (UTC)"


def test_at_phone_width_no_label_overlaps_and_nothing_scrolls_sideways(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, vera: User, chat: ModelDeployment
) -> None:
    from playwright.sync_api import expect

    page.set_viewport_size({"width": PHONE["width"], "height": PHONE["height"]})
    open_charts(page, sign_in, console_url, vera, "?range=24h")
    expect(page.locator("#slo-requests .tick-minor").first).to_be_hidden()  # fewer ticks when narrow
    assert page.evaluate(OVERLAPS) == []
    assert page.evaluate(SIDEWAYS) <= 0
    page.get_by_role("navigation", name="Chart range").get_by_role("link", name="1 h").click()
    expect(page.get_by_test_id("slo-range")).to_contain_text("Last hour")
    assert page.evaluate(OVERLAPS) == []
    assert page.evaluate(SIDEWAYS) <= 0


def test_the_usage_charts_keep_their_labels_apart_at_phone_width_and_have_their_tables(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, vera: User, acme: Tenant
) -> None:
    from playwright.sync_api import expect

    seed_usage(acme)
    page.set_viewport_size({"width": PHONE["width"], "height": PHONE["height"]})
    sign_in(page, vera)
    page.goto(f"{console_url}/t/acme/usage/")
    expect(page.locator("svg.chart")).to_have_count(4)
    assert page.evaluate(OVERLAPS) == []
    assert page.evaluate(SIDEWAYS) <= 0
    assert page.locator("details.chart-data").count() == 4
    days = page.locator("#usage-requests-data")
    days.locator("summary").click()
    expect(days.locator("tbody tr")).to_have_count(30)  # one row per day of the default range
