"""The SVG of the charts: gaps break a line into segments, ticks fall on round UTC times, the objective is a line or
a marker without flattening the data, every point has its data attributes and a data-table row, narrow charts keep
only their major labels."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from controlplane import charts
from controlplane.time_charts import Objective, TimeAxis, TimeSeries, time_chart
from deployments.console.slo import RANGES

SVG = "{http://www.w3.org/2000/svg}"
NOON = int(datetime(2026, 12, 2, 12, 0, tzinfo=UTC).timestamp())
QUARTER = TimeAxis(start=NOON - 900 + 7 * 10, step_s=10, count=90, tick_s=300, narrow_tick_s=300)  # not on a tick


def parse(chart: charts.Chart) -> ET.Element:
    return ET.fromstring(str(chart))  # noqa: S314 - our own output, not untrusted input


def lines(svg: ET.Element) -> list[ET.Element]:
    return [path for path in svg.iter(f"{SVG}path") if "line" in str(path.get("class"))]


def segments(path: ET.Element) -> list[list[tuple[float, float]]]:
    """The unbroken runs of a line: one per ``M`` subpath, as (x, y) points."""
    return [
        [(float(x), float(y)) for x, y in re.findall(r"([\d.]+),([\d.]+)", part)]
        for part in str(path.get("d")).split("M")[1:]
    ]


def with_class(svg: ET.Element, name: str) -> list[ET.Element]:
    return [e for e in svg.iter() if name in str(e.get("class", "")).split()]


def table_rows(chart: charts.Chart) -> int:
    return str(chart.table).count('<tr><th scope="row" class="chart-row">')


def latency(values: list[float | None], objective: float | None = None) -> charts.Chart:
    return time_chart(
        "lat",
        "p95 latency",
        "p95 per 10 s",
        QUARTER,
        [TimeSeries("p95", values)],
        "ms",
        unit="ms",
        objective=Objective("objective", objective) if objective else None,
    )


SERVED = [None] * 20 + [100.0 + i for i in range(30)] + [None] * 10 + [140.0] + [None] * 9 + [120.0] * 20


def test_it_breaks_the_line_where_nothing_was_served() -> None:
    chart = latency(SERVED)
    (path,) = lines(parse(chart))
    runs = segments(path)
    assert [len(run) for run in runs] == [30, 1, 20]  # three runs: gaps are never drawn, at 0 or otherwise
    assert str(path.get("d")).count("h0") == 1  # the lone point is a dot (round caps on a zero-length line)
    plot_bottom = 180.0
    assert all(y < plot_bottom for run in runs for _, y in run)  # nothing drawn at 0 ms


def test_every_point_has_its_data_and_a_table_row() -> None:
    chart = latency(SERVED)
    svg = parse(chart)
    points = with_class(svg, "chart-point")
    assert len(points) == chart.points == table_rows(chart) == 51  # served instants only
    first = points[0]
    assert first.get("data-time") == "11:49:30" and first.get("data-values") == "100 ms"
    assert float(str(first.get("data-ys"))) == segments(lines(svg)[0])[0][0][1]
    assert [float(str(p.get("data-x"))) for p in points] == sorted(float(str(p.get("data-x"))) for p in points)
    assert svg.get("tabindex") == "0" and svg.get("data-series") == "p95" and svg.get("data-zone") == "UTC"
    table = str(chart.table)
    assert (
        '<details class="chart-data" id="lat-data">' in table
        and "<caption>p95 latency, times in UTC</caption>" in table
    )
    assert '<th scope="col">Time (UTC)</th><th scope="col" class="num">p95 (ms)</th>' in table
    assert '<time datetime="2026-12-02T11:49:30+00:00">11:49:30</time></th><td class="num">100</td>' in table


@pytest.mark.parametrize("key", list(RANGES))
def test_it_labels_round_utc_times_and_names_the_zone(key: str) -> None:
    chosen = RANGES[key]
    start = NOON + 37 * 60 + 10 - chosen.span_s  # an end that is no round time
    axis = TimeAxis(start, chosen.step_s, chosen.span_s // chosen.step_s, chosen.tick_s, chosen.narrow_tick_s)
    svg = parse(time_chart("c", "t", "d", axis, [TimeSeries("requests", [1.0] * axis.count)], "per step"))
    ticks = with_class(svg, "tick-x")
    stamps = [int(datetime.fromisoformat(str(t.get("data-time"))).timestamp()) for t in ticks]
    assert len(ticks) >= 2 and all(stamp % chosen.tick_s == 0 for stamp in stamps)
    assert all(start <= stamp <= axis.end for stamp in stamps)
    major = [t for t in ticks if "tick-minor" not in str(t.get("class"))]
    assert 2 <= len(major) <= 4  # what a narrow chart keeps
    assert all(
        int(datetime.fromisoformat(str(t.get("data-time"))).timestamp()) % chosen.narrow_tick_s == 0 for t in major
    )
    assert len(ticks) <= 8
    assert "time (UTC)" in [t.text for t in svg.iter(f"{SVG}text")]


def test_it_writes_ticks_as_times_and_days_at_midnight() -> None:
    week = RANGES["7d"]
    axis = TimeAxis(NOON - week.span_s, week.step_s, 168, week.tick_s, week.narrow_tick_s)
    labels = [t.text for t in with_class(parse(time_chart("c", "t", "d", axis, [TimeSeries("r", [1.0] * 168)], "")),
                                        "tick-x")]  # fmt: skip
    assert labels[-1] == "Dec 02" and all(re.fullmatch(r"[A-Z][a-z]{2} \d\d", str(label)) for label in labels)
    assert [t.text for t in with_class(parse(latency([1.0] * 90)), "tick-x")] == ["11:50", "11:55", "12:00"]
    on_ticks = TimeAxis(NOON - 900, 10, 90, 300, 300)
    svg = parse(time_chart("c", "t", "d", on_ticks, [TimeSeries("r", [1.0] * 90)], ""))
    # 11:45 and 12:00 are the plot's edges: their grid lines stay, their labels would spill onto the axis labels.
    assert [t.text for t in with_class(svg, "tick-x")] == ["11:50", "11:55"]


def test_the_objective_is_a_line_when_the_data_reaches_it() -> None:
    svg = parse(latency(SERVED, objective=130))
    (objective,) = with_class(svg, "objective")
    line = objective.find(f"{SVG}line")
    assert line is not None and line.get("y1") == line.get("y2")
    assert "objective 130 ms" in [t.text for t in objective.iter(f"{SVG}text")]
    top_tick = max(float(str(t.text)) for t in svg.iter(f"{SVG}text") if str(t.text).isdigit())
    assert top_tick == 150  # the axis spans the data (140 at most)


def test_the_objective_is_a_marker_at_the_edge_when_the_data_stays_far_below_it() -> None:
    svg = parse(latency(SERVED, objective=2000))
    (objective,) = with_class(svg, "objective")
    assert "objective-above" in str(objective.get("class")) and objective.find(f"{SVG}line") is None
    assert "objective 2,000 ms, above the chart" in [t.text for t in objective.iter(f"{SVG}text")]
    runs = segments(lines(svg)[0])
    highest = min(y for run in runs for _, y in run)
    assert highest < 32 + 148 * 0.2  # the data fills the plot (top at 32, 148 high): it is not squashed under 2 s


def test_it_says_so_when_nothing_was_served() -> None:
    chart = latency([None] * 90)
    svg = parse(chart)
    assert lines(svg) == [] and chart.points == 0 and str(chart.table) == ""
    assert "Nothing was served in this range" in [t.text for t in svg.iter(f"{SVG}text")]
    assert svg.get("tabindex") is None  # nothing to move a crosshair over


def test_it_escapes_series_names() -> None:
    chart = time_chart("c", "t <b>", "d", QUARTER, [TimeSeries("r1 <canary>", [1.0] * 90)], "ms")
    svg = parse(chart)
    assert svg.get("data-series") == "r1 <canary>"
    assert "<canary>" not in str(chart.table) and "r1 &lt;canary&gt;" in str(chart.table)


def test_category_charts_keep_a_few_labels_when_narrow_and_carry_their_table() -> None:
    days = [f"Jan {d:02d}" for d in range(1, 31)]
    chart = charts.column_chart("c", "Requests per day", "d", days, [charts.Series("requests", [5.0] * 30)], "requests",
                                category_name="Day (UTC)")  # fmt: skip
    svg = parse(chart)
    labels = [t for t in svg.iter(f"{SVG}text") if str(t.text).startswith("Jan ")]
    major = [t for t in labels if "tick-minor" not in str(t.get("class"))]
    assert len(labels) <= charts.MAX_X_LABELS and 2 <= len(major) <= charts.NARROW_X_LABELS
    assert chart.points == table_rows(chart) == 30 and '<th scope="col">Day (UTC)</th>' in str(chart.table)


def test_horizontal_bars_have_a_shorter_label_for_narrow_charts() -> None:
    name = "a-long-deployment-name"
    svg = parse(charts.hbar_chart("c", "Tokens per deployment", "d", [name, "b"], [10.0, 5.0], "tokens"))
    narrow = with_class(svg, "label-narrow")
    assert len(narrow) == 1 and narrow[0].get("display") == "none"  # shown by charts.css in a narrow figure only
    assert len(str(narrow[0].text)) == charts.NARROW_LABEL_CHARS and str(narrow[0].text).endswith("…")
    assert [t.text for t in with_class(svg, "label-wide")] == [name]
