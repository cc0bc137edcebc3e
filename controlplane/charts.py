"""Server-rendered SVG charts over categories: column, line and horizontal-bar charts, and what every chart shares.

Nothing is fetched at run time and every chart reads without JavaScript. Each chart is one ``<svg role="img">``
whose ``<title>``/``<desc>`` name it for screen readers, with a data table of every point it draws beside it
(``Chart.table``). The ``viewBox`` makes it scale to its container; ``templates/includes/chart_figure.html`` shows it
with an HTML caption and legend, and ``static/console/charts.css`` maps its classes to the console's colours (dark mode
too) and, in a narrow container, enlarges the text and drops the labels marked ``tick-minor`` so none overlap.
Time series are drawn by ``controlplane.time_charts``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

from django.utils.safestring import SafeString, mark_safe

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies. These attributes serve an SVG shown
# without the stylesheet; charts.css gives each ``tone-N`` class its colour from a custom property.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00")
INK, INK_SOFT, GRID = "#111", "#333", "#ddd"
WIDTH = 720
HEIGHT = 280
MARGIN_LEFT = 64
MARGIN_RIGHT = 16
MARGIN_TOP = 40
MARGIN_BOTTOM = 44
MAX_X_LABELS = 12
NARROW_X_LABELS = 4  # category labels left in a narrow chart
NARROW_LABEL_CHARS = 13  # a horizontal bar's label, cut to fit the larger text of a narrow chart


@dataclass(frozen=True)
class Series:
    """One named sequence of values, one per category."""

    name: str
    values: Sequence[float]


@dataclass(frozen=True)
class LegendEntry:
    name: str
    tone: int  # index into PALETTE (class ``tone-N``)


@dataclass(frozen=True)
class Chart:
    """A rendered chart: the SVG, its title and legend (for an HTML caption) and a table of the points it draws.

    In a template ``{{ chart }}`` renders the SVG alone; ``includes/chart_figure.html`` renders all of it.
    """

    svg: SafeString
    title: str
    legend: tuple[LegendEntry, ...]
    table: SafeString  # empty when nothing is drawn
    points: int  # rows of the table: one per point (category, bar or instant)

    def __html__(self) -> str:
        return self.svg

    def __str__(self) -> str:
        return str(self.svg)


def compact_number(value: float) -> str:
    """1234 -> 1.2k, 5_600_000 -> 5.6M: short labels for axes."""
    magnitude = abs(value)
    for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= threshold:
            text = f"{value / threshold:.1f}".rstrip("0").rstrip(".")
            return f"{text}{suffix}"
    return f"{value:g}" if value != int(value) else str(int(value))


def figure_text(value: float, unit: str = "") -> str:
    """A value as a table cell or tooltip shows it: thousands separators, a decimal only below 10 (2.5 ms, 1,234)."""
    text = f"{value:,.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.1f}"
    return f"{text} {unit}" if unit else text


def nice_ticks(maximum: float, count: int = 4) -> list[float]:
    """Round tick values from 0 to at least ``maximum`` (steps of 1, 2 or 5 × 10^n; whole numbers, as charts count)."""
    if maximum <= 0:
        return [0, 1]
    raw_step = maximum / count
    power = 10 ** math.floor(math.log10(raw_step))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw_step)
    step = max(1, round(step))
    top = math.ceil(maximum / step) * step
    ticks = []
    value = 0.0
    while value <= top + step / 2:
        ticks.append(round(value, 10))
        value += step
    return ticks


# A data table row: its head (a label, or (label, ISO time) for a ``<time>``) and one cell per series.
TableRow = tuple[str | tuple[str, str], Sequence[str]]


def data_table(chart_id: str, caption: str, headers: Sequence[str], rows: Iterable[TableRow]) -> SafeString:
    """The figures behind a chart, one row per point, in a closed ``<details>`` (screen readers and anyone curious)."""
    body = []
    for first, cells in rows:
        body.append(
            f'<tr><th scope="row" class="chart-row">{_row_head(first)}</th>'
            + "".join(f'<td class="num">{escape(cell)}</td>' for cell in cells)
            + "</tr>"
        )
    if not body:
        return mark_safe("")
    first_head, *value_heads = headers
    head = f'<th scope="col">{escape(first_head)}</th>' + "".join(
        f'<th scope="col" class="num">{escape(h)}</th>' for h in value_heads
    )
    cid = escape(chart_id)
    return mark_safe(  # noqa: S308 - every interpolated text went through escape()
        f'<details class="chart-data" id="{cid}-data"><summary>Data table'
        f'<span class="sr-only">: {escape(caption)}</span> ({len(body):,} rows)</summary>'
        f'<div class="table-wrap"><table><caption>{escape(caption)}</caption><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div></details>"
    )


def _row_head(first: str | tuple[str, str]) -> str:
    if isinstance(first, tuple):
        return f'<time datetime="{escape(first[1])}">{escape(first[0])}</time>'
    return escape(first)


def svg_open(
    chart_id: str, title: str, description: str, width: int, height: int, kind: str, attrs: str = ""
) -> list[str]:
    """The opening of a chart's SVG: its id, classes (``kind``), viewBox, accessible name and description."""
    cid = escape(chart_id)
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{cid}" class="chart {kind}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-labelledby="{cid}-title {cid}-desc" font-family="system-ui, sans-serif" font-size="11"'
        f"{attrs}>",
        f'<title id="{cid}-title">{escape(title)}</title>',
        f'<desc id="{cid}-desc">{escape(description)}</desc>',
    ]


def _head(title: str, series: Sequence[Series], width: int) -> str:
    """The title and legend drawn in the SVG, for a chart shown on its own (a figure shows them in HTML instead)."""
    parts = [f'<g class="chart-head"><text x="{MARGIN_LEFT}" y="18" font-size="14" font-weight="600" fill="{INK}">']
    parts.append(f"{escape(title)}</text>")
    x = width - MARGIN_RIGHT
    shown = series if len(series) > 1 else []
    for index in reversed(range(len(shown))):
        x -= 14 + 7 * len(series[index].name)
        parts.append(f'<rect x="{x}" y="9" width="10" height="10" class="tone-{index}" fill="{tone_colour(index)}"/>')
        parts.append(f'<text x="{x + 14}" y="18" fill="{INK_SOFT}">{escape(series[index].name)}</text>')
    parts.append("</g>")
    return "".join(parts)


def tone_colour(tone: int) -> str:
    """The fallback colour of class ``tone-N`` (charts.css sets the themed one)."""
    return PALETTE[tone % len(PALETTE)]


def _legend(series: Sequence[Series]) -> tuple[LegendEntry, ...]:
    return tuple(LegendEntry(one.name, index) for index, one in enumerate(series))


def svg_message(parts: list[str], x: float, y: float, message: str) -> None:
    """A sentence in place of the data ("No usage in this range")."""
    parts.append(
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="middle" class="chart-message" fill="#555" font-size="13">'
        f"{escape(message)}</text>"
    )


def svg_close(parts: list[str]) -> SafeString:
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated text went through escape()


def _y_axis(parts: list[str], ticks: list[float], plot_w: float, plot_h: float, y_label: str) -> None:
    top = ticks[-1] or 1
    for tick in ticks:
        y = MARGIN_TOP + plot_h - plot_h * tick / top
        zero = ' class="tick-minor"' if tick == 0 else ""  # in a narrow chart's larger text it would meet the x labels
        parts.append(
            f'<line class="grid" x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{GRID}"/><text{zero} x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{INK_SOFT}">'
            f"{compact_number(tick)}</text>"
        )
    # Above the plot rather than rotated beside the tick labels; a narrow figure hides it (its caption names the unit).
    parts.append(f'<text class="axis-title" x="4" y="{MARGIN_TOP - 10}" fill="{INK_SOFT}">{escape(y_label)}</text>')
    parts.append(
        f'<line class="axis" x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + plot_w}" y1="{MARGIN_TOP + plot_h}" '
        f'y2="{MARGIN_TOP + plot_h}" stroke="{INK_SOFT}"/>'
    )


def _x_labels(parts: list[str], categories: Sequence[str], slot: float, plot_h: float) -> None:
    every = max(1, math.ceil(len(categories) / MAX_X_LABELS))
    narrow_every = every * max(1, math.ceil(len(categories) / every / NARROW_X_LABELS))
    for index, label in enumerate(categories):
        if index % every:
            continue
        x = MARGIN_LEFT + slot * (index + 0.5)
        minor = ' class="tick-minor"' if index % narrow_every else ""
        parts.append(
            f'<text{minor} x="{x:.1f}" y="{MARGIN_TOP + plot_h + 16}" text-anchor="middle" fill="{INK_SOFT}">'
            f"{escape(label)}</text>"
        )


def _category_table(
    chart_id: str, title: str, categories: Sequence[str], series: Sequence[Series], category_name: str
) -> SafeString:
    rows = [(category, [figure_text(one.values[i]) for one in series]) for i, category in enumerate(categories)]
    return data_table(chart_id, title, [category_name, *(one.name for one in series)], rows)


def _category_chart(
    kind: str,
    chart_id: str,
    title: str,
    description: str,
    categories: Sequence[str],
    series: Sequence[Series],
    y_label: str,
    width: int,
    height: int,
    category_name: str,
) -> Chart:
    """Columns or lines over categories, on shared axes; the empty state when every value is zero."""
    parts = svg_open(chart_id, title, description, width, height, "chart-category")
    parts.append(_head(title, series, width))
    legend = _legend(series) if len(series) > 1 else ()
    if not categories or not series or not any(v for s in series for v in s.values):
        svg_message(parts, width / 2, height / 2, "No usage in this range")
        return Chart(svg_close(parts), title, legend, mark_safe(""), 0)
    plot_w, plot_h = width - MARGIN_LEFT - MARGIN_RIGHT, height - MARGIN_TOP - MARGIN_BOTTOM
    ticks = nice_ticks(max(v for s in series for v in s.values))
    _y_axis(parts, ticks, plot_w, plot_h, y_label)
    slot = plot_w / len(categories)
    (_columns if kind == "columns" else _lines)(parts, categories, series, slot, plot_h, ticks[-1])
    _x_labels(parts, categories, slot, plot_h)
    table = _category_table(chart_id, title, categories, series, category_name)
    return Chart(svg_close(parts), title, legend, table, len(categories))


def _columns(
    parts: list[str], categories: Sequence[str], series: Sequence[Series], slot: float, plot_h: float, top: float
) -> None:
    bar_w = max(slot * 0.8 / len(series), 0.5)
    for s_index, one in enumerate(series):
        for index, value in enumerate(one.values):
            bar_h = plot_h * value / top
            x = MARGIN_LEFT + slot * index + slot * 0.1 + bar_w * s_index
            y = MARGIN_TOP + plot_h - bar_h
            tip = escape(f"{categories[index]} · {one.name}: {value:,.0f}")
            parts.append(
                f'<rect class="tone-{s_index}" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{bar_h:.1f}" '
                f'fill="{tone_colour(s_index)}"><title>{tip}</title></rect>'
            )


def _lines(
    parts: list[str], categories: Sequence[str], series: Sequence[Series], slot: float, plot_h: float, top: float
) -> None:
    for s_index, one in enumerate(series):
        colour = tone_colour(s_index)
        points = [
            (MARGIN_LEFT + slot * (i + 0.5), MARGIN_TOP + plot_h - plot_h * v / top) for i, v in enumerate(one.values)
        ]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(
            f'<polyline class="line tone-{s_index}" points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
        )
        if len(points) <= 62:
            for (x, y), category, value in zip(points, categories, one.values, strict=False):
                tip = escape(f"{category} · {one.name}: {value:,.0f}")
                parts.append(
                    f'<circle class="dot tone-{s_index}" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}">'
                    f"<title>{tip}</title></circle>"
                )


def column_chart(
    chart_id: str,
    title: str,
    description: str,
    categories: Sequence[str],
    series: Sequence[Series],
    y_label: str,
    *,
    width: int = WIDTH,
    height: int = HEIGHT,
    category_name: str = "Category",
) -> Chart:
    """Grouped vertical bars, one group per category (e.g. per day), one bar per series."""
    return _category_chart(
        "columns", chart_id, title, description, categories, series, y_label, width, height, category_name
    )


def line_chart(
    chart_id: str,
    title: str,
    description: str,
    categories: Sequence[str],
    series: Sequence[Series],
    y_label: str,
    *,
    width: int = WIDTH,
    height: int = HEIGHT,
    category_name: str = "Category",
) -> Chart:
    """One line per series over the categories (e.g. days), with a marker per point when there are few."""
    return _category_chart(
        "lines", chart_id, title, description, categories, series, y_label, width, height, category_name
    )


def hbar_chart(
    chart_id: str,
    title: str,
    description: str,
    labels: Sequence[str],
    values: Sequence[float],
    x_label: str,
    *,
    width: int = WIDTH,
    label_width: int = 180,
    category_name: str = "Category",
) -> Chart:
    """Horizontal bars with their labels on the left: for top-N lists (deployments, keys, tenants)."""
    row_h = 22
    height = MARGIN_TOP + row_h * max(len(labels), 1) + MARGIN_BOTTOM
    parts = svg_open(chart_id, title, description, width, height, "chart-category chart-hbar")
    parts.append(_head(title, [], width))
    if not labels or not any(values):
        svg_message(parts, width / 2, height / 2, "No usage in this range")
        return Chart(svg_close(parts), title, (), mark_safe(""), 0)
    plot_w = width - label_width - MARGIN_RIGHT - 8
    ticks = nice_ticks(max(values))
    plot_bottom = MARGIN_TOP + row_h * len(labels)
    for tick in ticks:
        x = label_width + plot_w * tick / ticks[-1]
        minor = ' class="tick-minor"' if tick not in (ticks[0], ticks[-1]) and len(ticks) > 3 else ""
        anchor = "end" if tick == ticks[-1] else "middle"  # the last label ends at the edge, never past it
        parts.append(
            f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{MARGIN_TOP}" y2="{plot_bottom}" stroke="{GRID}"/>'
            f'<text{minor} x="{x:.1f}" y="{plot_bottom + 14}" text-anchor="{anchor}" fill="{INK_SOFT}">'
            f"{compact_number(tick)}</text>"
        )
    parts.append(
        f'<text x="{label_width + plot_w / 2:.1f}" y="{plot_bottom + 32}" text-anchor="middle" fill="{INK_SOFT}">'
        f"{escape(x_label)}</text>"
    )
    max_chars = label_width // 7
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = MARGIN_TOP + row_h * index
        parts.append(_bar_label(label, label_width - 6, y + 15, max_chars))
        bar_w = plot_w * value / ticks[-1]
        parts.append(
            f'<rect class="tone-0" x="{label_width}" y="{y + 4}" width="{bar_w:.1f}" height="{row_h - 8}" '
            f'fill="{PALETTE[0]}"><title>{escape(f"{label}: {value:,.0f}")}</title></rect>'
        )
    rows = [(label, [figure_text(value)]) for label, value in zip(labels, values, strict=True)]
    table = data_table(chart_id, title, [category_name, x_label], rows)
    return Chart(svg_close(parts), title, (), table, len(labels))


def _bar_label(label: str, x: int, y: int, max_chars: int) -> str:
    """A bar's label, and a shorter one for the larger text of a narrow chart (hidden unless the CSS shows it)."""

    def cut(limit: int) -> str:
        return label if len(label) <= limit else label[: limit - 1] + "…"

    wide = f'<text x="{x}" y="{y}" text-anchor="end" fill="{INK}"'
    if len(label) <= NARROW_LABEL_CHARS:
        return f"{wide}>{escape(label)}</text>"
    return (
        f'{wide} class="label-wide">{escape(cut(max_chars))}</text>'
        f'<text x="{x}" y="{y}" text-anchor="end" fill="{INK}" class="label-narrow" display="none">'
        f"{escape(cut(NARROW_LABEL_CHARS))}</text>"
    )
