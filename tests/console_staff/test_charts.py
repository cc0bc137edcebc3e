"""The SVG charts are well-formed XML with an accessible title and description, and escape their labels."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

import pytest

from controlplane import charts

SVG = "{http://www.w3.org/2000/svg}"


def parse(chart: charts.Chart) -> ET.Element:
    root = ET.fromstring(str(chart))  # noqa: S314 - our own output, not untrusted input
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    title_id, desc_id = root.get("aria-labelledby", "").split()
    assert root.find(f"{SVG}title").get("id") == title_id  # type: ignore[union-attr]
    assert root.find(f"{SVG}desc").get("id") == desc_id  # type: ignore[union-attr]
    return root


DAYS = ["Jan 01", "Jan 02", "Jan 03"]
TWO = [charts.Series("requests", [10, 0, 25]), charts.Series("errors <&>", [1, 0, 3])]


@pytest.mark.parametrize("make", [charts.column_chart, charts.line_chart])
def test_it_draws_a_series_chart_with_axes_and_labels(make: object) -> None:
    root = parse(make("c1", "Requests & errors", "per day <UTC>", DAYS, TWO, "requests"))  # type: ignore[operator]
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "Requests & errors" in texts
    assert "Jan 01" in texts and "requests" in texts
    assert "errors <&>" in texts  # escaped in the markup, intact once parsed
    assert "30" in texts  # the y axis reaches a round number above the largest value (25)


def test_it_draws_one_bar_per_value() -> None:
    root = parse(charts.column_chart("c2", "t", "d", DAYS, TWO, "y"))
    bars = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert len(bars) == 6
    heights = {r.find(f"{SVG}title").text: float(r.get("height", "0")) for r in bars}  # type: ignore[union-attr]
    assert heights["Jan 03 · requests: 25"] > heights["Jan 01 · requests: 10"] > heights["Jan 01 · errors <&>: 1"]


def test_it_draws_horizontal_bars_with_truncated_labels() -> None:
    long_name = "a-very-long-deployment-name-that-does-not-fit-the-margin"
    root = parse(charts.hbar_chart("c3", "Tokens per deployment", "d", [long_name, "b"], [1500, 20], "tokens"))
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert any(t.endswith("…") and long_name.startswith(t[:-1]) for t in texts)
    titles = [t.text for t in root.iter(f"{SVG}title")]
    assert f"{long_name}: 1,500" in titles


@pytest.mark.parametrize("values", [[], [0, 0, 0]])
def test_it_says_so_when_there_is_nothing_to_draw(values: list[int]) -> None:
    root = parse(charts.column_chart("c4", "t", "d", DAYS[: len(values)], [charts.Series("r", values)], "y"))
    assert "No usage in this range" in [t.text for t in root.iter(f"{SVG}text")]


@pytest.mark.parametrize(("maximum", "top"), [(25, 30), (7, 8), (1, 1), (0.3, 1), (999, 1000), (123_456, 150_000)])
def test_it_picks_round_ticks(maximum: float, top: float) -> None:
    ticks = charts.nice_ticks(maximum)
    assert ticks[0] == 0 and ticks[-1] == top
    assert len({round(b - a, 6) for a, b in itertools.pairwise(ticks)}) == 1


def test_it_abbreviates_large_numbers() -> None:
    assert [charts.compact_number(v) for v in (0, 950, 1500, 2_000_000, 3.5e9)] == ["0", "950", "1.5k", "2M", "3.5G"]
