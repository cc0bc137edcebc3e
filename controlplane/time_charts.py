"""Server-rendered SVG time-series charts (the SLO charts of a deployment).

Lines break where a value is missing (nothing was served: there is no latency to draw, and none is drawn at 0). The
x axis is labelled at round UTC times and says so. An objective is a dashed line, or a labelled marker at the top edge
when the data stays below it: the y axis spans the data, never the objective, so the data is never flattened. Each
point has one ``<g class="chart-point">`` with its time, values and y positions in ``data-*`` attributes, which
``static/console/charts.js`` reads for its hover and keyboard crosshair; the chart's data table has the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from html import escape

from controlplane.charts import (
    GRID,
    INK,
    INK_SOFT,
    PALETTE,
    Chart,
    LegendEntry,
    TableRow,
    compact_number,
    data_table,
    figure_text,
    nice_ticks,
    svg_close,
    svg_message,
    svg_open,
    tone_colour,
)

TIME_WIDTH = 480
TIME_HEIGHT = 220
TIME_LEFT, TIME_RIGHT, TIME_TOP, TIME_BOTTOM = 44, 12, 32, 40
# A tick label this close to the plot's edge would run into the axis labels: its grid line stays, the text goes.
EDGE_ROOM = 14


@cache
def _day_names(day: int) -> tuple[str, str]:
    """A day since the epoch as ``2026-12-02`` and ``Dec 02``."""
    moment = datetime.fromtimestamp(day * 86_400, tz=UTC)
    return moment.strftime("%Y-%m-%d"), moment.strftime("%b %d")


@dataclass(frozen=True)
class TimeAxis:
    """Evenly spaced instants from ``start`` (epoch seconds), one per ``step_s``, and where the labelled ticks go."""

    start: int
    step_s: int
    count: int
    tick_s: int  # a tick at every UTC multiple of this
    narrow_tick_s: int  # the ticks still labelled in a narrow chart: a multiple of ``tick_s``

    @property
    def end(self) -> int:
        return self.start + self.step_s * self.count

    def point_times(self, index: int) -> tuple[str, str]:
        """How a point's time reads (its interval's start, UTC: seconds for 10 s steps, the date for longer ones) and
        its ISO 8601 form. Formatted by hand: ``strftime`` for every point of every chart costs more than the rest."""
        epoch = self.start + index * self.step_s
        day, seconds = divmod(epoch, 86_400)
        clock = f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
        iso_day, short_day = _day_names(day)
        label = clock if self.step_s < 60 else f"{short_day} {clock[:5]}"
        return label, f"{iso_day}T{clock}+00:00"

    def tick_label(self, epoch: int) -> str:
        """ "14:05", or the date at midnight when ticks are an hour or more apart ("Dec 02")."""
        moment = datetime.fromtimestamp(epoch, tz=UTC)
        if self.tick_s >= 3600 and epoch % 86_400 == 0:
            return moment.strftime("%b %d")
        return moment.strftime("%H:%M")

    def ticks(self) -> list[int]:
        first = -(-self.start // self.tick_s) * self.tick_s
        return list(range(first, self.end + 1, self.tick_s))


@dataclass(frozen=True)
class TimeSeries:
    """One line over a time axis: a value per instant, or None where there is nothing to draw (the line breaks)."""

    name: str
    values: Sequence[float | None]
    tone: int = 0  # index into PALETTE


@dataclass(frozen=True)
class Objective:
    """A target drawn across a time chart (a p95 latency objective)."""

    label: str
    value: float


@dataclass(frozen=True)
class _Plot:
    left: float
    top: float
    right: float
    bottom: float

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top


def time_chart(
    chart_id: str,
    title: str,
    description: str,
    axis: TimeAxis,
    series: Sequence[TimeSeries],
    y_label: str,
    *,
    unit: str = "",
    objective: Objective | None = None,
    empty_message: str = "Nothing was served in this range",
) -> Chart:
    """Lines over time with gaps where values are missing, round UTC ticks, an optional objective, per-point data.

    ``unit`` follows each value in the tooltip ("103 ms"); the table puts it in the column heads.
    """
    plot = _Plot(TIME_LEFT, TIME_TOP, TIME_WIDTH - TIME_RIGHT, TIME_HEIGHT - TIME_BOTTOM)
    drawn = [v for one in series for v in one.values if v is not None]
    ticks = nice_ticks(max(drawn, default=0))
    top = ticks[-1]

    def x_of(epoch: float) -> float:
        return plot.left + plot.width * (epoch - axis.start) / (axis.end - axis.start)

    scale = plot.height / top

    def y_of(value: float) -> float:
        return plot.bottom - scale * value

    names = "|".join(one.name for one in series)
    attrs = (
        f' data-series="{escape(names)}" data-plot="{plot.left} {plot.top} {plot.right} {plot.bottom}" data-zone="UTC"'
        + (' tabindex="0"' if drawn else "")
    )
    parts = svg_open(chart_id, title, description, TIME_WIDTH, TIME_HEIGHT, "chart-time", attrs)
    _time_y_axis(parts, ticks, plot, y_label)
    _time_x_axis(parts, axis, plot, x_of)
    if objective is not None:
        _objective(parts, objective, top, plot, y_of, unit)
    if not drawn:
        svg_message(parts, (plot.left + plot.right) / 2, (plot.top + plot.bottom) / 2, empty_message)
    centres = [f"{x_of(axis.start + (i + 0.5) * axis.step_s):.1f}" for i in range(axis.count)]
    # Each value's y and text, worked out once for the line, the point's data and the table.
    ys = [["" if v is None else f"{y_of(v):.1f}" for v in one.values] for one in series]
    cells = [["–" if v is None else figure_text(v) for v in one.values] for one in series]
    for one, one_ys in zip(series, ys, strict=True):
        d = _path([(centres[i], y) if y else None for i, y in enumerate(one_ys)])
        if d:
            parts.append(
                f'<path class="line tone-{one.tone}" d="{d}" fill="none" stroke="{tone_colour(one.tone)}" '
                'stroke-width="2" stroke-linejoin="round" stroke-linecap="round"/>'
            )
    rows: list[TableRow] = []
    suffix = f" {unit}" if unit else ""
    parts.append('<g class="chart-points">')
    for i in range(axis.count):
        point_ys = [one_ys[i] for one_ys in ys]
        if not any(point_ys):
            continue
        point_cells = [one_cells[i] for one_cells in cells]
        texts = "|".join(cell + suffix if y else cell for cell, y in zip(point_cells, point_ys, strict=True))
        label, stamp = axis.point_times(i)
        parts.append(
            f'<g class="chart-point" data-x="{centres[i]}" data-time="{label}" data-values="{escape(texts)}" '
            f'data-ys="{"|".join(point_ys)}"/>'
        )
        rows.append(((label, stamp), point_cells))
    parts.append("</g>")
    headers = ["Time (UTC)", *(f"{one.name} ({unit})" if unit else one.name for one in series)]
    table = data_table(chart_id, f"{title}, times in UTC", headers, rows)
    legend = tuple(LegendEntry(one.name, one.tone) for one in series)
    return Chart(svg_close(parts), title, legend, table, len(rows))


def _path(points: Sequence[tuple[str, str] | None]) -> str:
    """SVG path data with a new subpath after every gap; a point alone is a dot (round caps on a zero-length line)."""
    d: list[str] = []
    run = 0
    for point in [*points, None]:
        if point is None:
            if run == 1:
                d.append("h0")
            run = 0
            continue
        d.append(f"{'L' if run else 'M'}{point[0]},{point[1]}")
        run += 1
    return "".join(d)


def _time_y_axis(parts: list[str], ticks: list[float], plot: _Plot, y_label: str) -> None:
    for tick in ticks:
        y = plot.bottom - plot.height * tick / ticks[-1]
        parts.append(
            f'<line class="grid" x1="{plot.left}" x2="{plot.right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>'
            f'<text x="{plot.left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{INK_SOFT}">'
            f"{compact_number(tick)}</text>"
        )
    parts.append(f'<text class="axis-title" x="4" y="14" fill="{INK_SOFT}">{escape(y_label)}</text>')


def _time_x_axis(parts: list[str], axis: TimeAxis, plot: _Plot, x_of: Callable[[float], float]) -> None:
    for epoch in axis.ticks():
        x = x_of(epoch)
        parts.append(
            f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{plot.top}" y2="{plot.bottom + 4}" stroke="{GRID}"/>'
        )
        if x - plot.left < EDGE_ROOM or plot.right - x < EDGE_ROOM:
            continue
        minor = "" if epoch % axis.narrow_tick_s == 0 else " tick-minor"
        stamp = datetime.fromtimestamp(epoch, tz=UTC).isoformat()
        parts.append(
            f'<text class="tick-x{minor}" data-time="{stamp}" x="{x:.1f}" y="{plot.bottom + 15}" text-anchor="middle" '
            f'fill="{INK_SOFT}">{escape(axis.tick_label(epoch))}</text>'
        )
    parts.append(
        f'<line class="axis" x1="{plot.left}" x2="{plot.right}" y1="{plot.bottom}" y2="{plot.bottom}" '
        f'stroke="{INK_SOFT}"/>'
        f'<text class="axis-zone" x="{plot.right}" y="{plot.bottom + 33}" text-anchor="end" fill="{INK_SOFT}">'
        "time (UTC)</text>"
    )


def _objective(
    parts: list[str], objective: Objective, top: float, plot: _Plot, y_of: Callable[[float], float], unit: str
) -> None:
    """The objective as a dashed line across the plot, or, above the y axis's span, a marker at the top edge."""
    text = f"{objective.label} {figure_text(objective.value, unit)}"
    halo = 'paint-order="stroke" stroke="#fff" stroke-width="3" stroke-linejoin="round"'
    if objective.value <= top:
        y = y_of(objective.value)
        label_y = y - 4 if y - 14 > plot.top else y + 12
        parts.append(
            f'<g class="objective" data-value="{objective.value:g}">'
            f'<line x1="{plot.left}" x2="{plot.right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{PALETTE[5]}" '
            'stroke-width="1.5" stroke-dasharray="6 4"/>'
            f'<text class="halo" x="{plot.right - 2}" y="{label_y:.1f}" text-anchor="end" fill="{INK}" {halo}>'
            f"{escape(text)}</text></g>"
        )
        return
    parts.append(
        f'<g class="objective objective-above" data-value="{objective.value:g}">'
        f'<path d="M{plot.right - 10},{plot.top - 2}l5,-8l5,8z" fill="{PALETTE[5]}"/>'
        f'<text x="{plot.right - 14}" y="14" text-anchor="end" fill="{INK}">{escape(text)}, above the chart</text></g>'
    )
