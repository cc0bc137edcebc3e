"""Server-rendered SVG charts: column, line and horizontal-bar charts with axes, labels, a title and a description.

No JavaScript and nothing fetched at run time. Each chart is one ``<svg role="img">`` whose ``<title>``/``<desc>``
name it for screen readers; every bar or point has its own ``<title>`` (a tooltip with the exact figure). The
``viewBox`` makes it scale to its container, from a phone to a wide screen (``static/quotas/quotas.css``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from django.utils.safestring import SafeString, mark_safe

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00")
WIDTH = 720
HEIGHT = 280
MARGIN_LEFT = 64
MARGIN_RIGHT = 16
MARGIN_TOP = 40
MARGIN_BOTTOM = 44
MAX_X_LABELS = 12


@dataclass(frozen=True)
class Series:
    """One named sequence of values, one per category."""

    name: str
    values: Sequence[float]


def compact_number(value: float) -> str:
    """1234 -> 1.2k, 5_600_000 -> 5.6M: short labels for axes."""
    magnitude = abs(value)
    for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= threshold:
            text = f"{value / threshold:.1f}".rstrip("0").rstrip(".")
            return f"{text}{suffix}"
    return f"{value:g}" if value != int(value) else str(int(value))


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


def _open(chart_id: str, title: str, description: str, width: int, height: int) -> list[str]:
    cid = escape(chart_id)
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'role="img" aria-labelledby="{cid}-title {cid}-desc" font-family="system-ui, sans-serif" font-size="11">',
        f'<title id="{cid}-title">{escape(title)}</title>',
        f'<desc id="{cid}-desc">{escape(description)}</desc>',
        f'<text x="{MARGIN_LEFT}" y="18" font-size="14" font-weight="600" fill="#111">{escape(title)}</text>',
    ]


def _legend(series: Sequence[Series], width: int) -> list[str]:
    if len(series) < 2:
        return []
    parts = []
    x = width - MARGIN_RIGHT
    for index in reversed(range(len(series))):
        name = escape(series[index].name)
        x -= 14 + 7 * len(series[index].name)
        parts.append(f'<rect x="{x}" y="9" width="10" height="10" fill="{PALETTE[index % len(PALETTE)]}"/>')
        parts.append(f'<text x="{x + 14}" y="18" fill="#333">{name}</text>')
    return parts


def _empty(parts: list[str], width: int, height: int, message: str) -> SafeString:
    parts.append(
        f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#555" font-size="13">'
        f"{escape(message)}</text>"
    )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated text went through escape()


def _y_axis(parts: list[str], ticks: list[float], plot_w: float, plot_h: float, y_label: str) -> None:
    top = ticks[-1] or 1
    for tick in ticks:
        y = MARGIN_TOP + plot_h - plot_h * tick / top
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#333">{compact_number(tick)}</text>'
        )
    mid = MARGIN_TOP + plot_h / 2
    parts.append(
        f'<text x="12" y="{mid:.1f}" transform="rotate(-90 12 {mid:.1f})" text-anchor="middle" fill="#333">'
        f"{escape(y_label)}</text>"
    )
    parts.append(
        f'<line x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + plot_w}" y1="{MARGIN_TOP + plot_h}" '
        f'y2="{MARGIN_TOP + plot_h}" stroke="#333"/>'
    )


def _x_labels(parts: list[str], categories: Sequence[str], slot: float, plot_h: float) -> None:
    every = max(1, math.ceil(len(categories) / MAX_X_LABELS))
    for index, label in enumerate(categories):
        if index % every:
            continue
        x = MARGIN_LEFT + slot * (index + 0.5)
        parts.append(
            f'<text x="{x:.1f}" y="{MARGIN_TOP + plot_h + 16}" text-anchor="middle" fill="#333">{escape(label)}</text>'
        )


def _category_frame(
    chart_id: str,
    title: str,
    description: str,
    categories: Sequence[str],
    series: Sequence[Series],
    y_label: str,
    width: int,
    height: int,
) -> SafeString | tuple[list[str], float, list[float], float]:
    """The frame shared by charts over categories: the empty state, or (parts, plot height, y ticks, slot width)."""
    parts = _open(chart_id, title, description, width, height)
    if not categories or not series or not any(v for s in series for v in s.values):
        return _empty(parts, width, height, "No usage in this range")
    parts += _legend(series, width)
    plot_w, plot_h = width - MARGIN_LEFT - MARGIN_RIGHT, height - MARGIN_TOP - MARGIN_BOTTOM
    ticks = nice_ticks(max(v for s in series for v in s.values))
    _y_axis(parts, ticks, plot_w, plot_h, y_label)
    return parts, plot_h, ticks, plot_w / len(categories)


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
) -> SafeString:
    """Grouped vertical bars, one group per category (e.g. per day), one bar per series."""
    frame = _category_frame(chart_id, title, description, categories, series, y_label, width, height)
    if isinstance(frame, SafeString):
        return frame
    parts, plot_h, ticks, slot = frame
    bar_w = max(slot * 0.8 / len(series), 0.5)
    for s_index, one in enumerate(series):
        colour = PALETTE[s_index % len(PALETTE)]
        for index, value in enumerate(one.values):
            bar_h = plot_h * value / ticks[-1]
            x = MARGIN_LEFT + slot * index + slot * 0.1 + bar_w * s_index
            y = MARGIN_TOP + plot_h - bar_h
            tip = escape(f"{categories[index]} · {one.name}: {value:,.0f}")
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{bar_h:.1f}" fill="{colour}">'
                f"<title>{tip}</title></rect>"
            )
    _x_labels(parts, categories, slot, plot_h)
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated text went through escape()


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
) -> SafeString:
    """One line per series over the categories (e.g. days), with a marker per point when there are few."""
    frame = _category_frame(chart_id, title, description, categories, series, y_label, width, height)
    if isinstance(frame, SafeString):
        return frame
    parts, plot_h, ticks, slot = frame
    for s_index, one in enumerate(series):
        colour = PALETTE[s_index % len(PALETTE)]
        points = [
            (MARGIN_LEFT + slot * (i + 0.5), MARGIN_TOP + plot_h - plot_h * v / ticks[-1])
            for i, v in enumerate(one.values)
        ]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        if len(points) <= 62:
            for (x, y), category, value in zip(points, categories, one.values, strict=False):
                tip = escape(f"{category} · {one.name}: {value:,.0f}")
                parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>{tip}</title></circle>')
    _x_labels(parts, categories, slot, plot_h)
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated text went through escape()


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
) -> SafeString:
    """Horizontal bars with their labels on the left: for top-N lists (deployments, keys, tenants)."""
    row_h = 22
    height = MARGIN_TOP + row_h * max(len(labels), 1) + MARGIN_BOTTOM
    parts = _open(chart_id, title, description, width, height)
    if not labels or not any(values):
        return _empty(parts, width, height, "No usage in this range")
    plot_w = width - label_width - MARGIN_RIGHT - 8
    ticks = nice_ticks(max(values))
    plot_bottom = MARGIN_TOP + row_h * len(labels)
    for tick in ticks:
        x = label_width + plot_w * tick / ticks[-1]
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{MARGIN_TOP}" y2="{plot_bottom}" stroke="#ddd"/>'
            f'<text x="{x:.1f}" y="{plot_bottom + 14}" text-anchor="middle" fill="#333">{compact_number(tick)}</text>'
        )
    parts.append(
        f'<text x="{label_width + plot_w / 2:.1f}" y="{plot_bottom + 32}" text-anchor="middle" fill="#333">'
        f"{escape(x_label)}</text>"
    )
    max_chars = label_width // 7
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = MARGIN_TOP + row_h * index
        shown = label if len(label) <= max_chars else label[: max_chars - 1] + "…"
        bar_w = plot_w * value / ticks[-1]
        parts.append(
            f'<text x="{label_width - 6}" y="{y + 15}" text-anchor="end" fill="#111">{escape(shown)}</text>'
            f'<rect x="{label_width}" y="{y + 4}" width="{bar_w:.1f}" height="{row_h - 8}" fill="{PALETTE[0]}">'
            f"<title>{escape(f'{label}: {value:,.0f}')}</title></rect>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated text went through escape()
