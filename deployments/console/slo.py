"""The SLO charts partial of a deployment's detail page: requests, p95 latency and TTFT over a chosen range, as SVG.

The range (15 m, 1 h, 6 h, 24 h, 7 d) comes from the ``range`` query parameter, or from the page's own URL when the
detail page's polling asks without one (htmx sends it as ``HX-Current-URL``), so a chosen range survives refreshes
and reloads; anything else is the default hour. Short ranges read the 10 s samples, longer ones the 5 min rows
(summed into hours by Postgres for 7 days), the newest spans the downsampler has not written yet coming from the
10 s rows. While two revisions take traffic (a canary), the charts draw each revision's line: canary against stable.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from django.db.models import BigIntegerField, Q, QuerySet, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Trunc
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from controlplane.charts import Chart
from controlplane.time_charts import Objective, TimeAxis, TimeSeries, time_chart
from deployments.console.views import DeploymentMixin
from deployments.models import ModelDeployment, Revision, SloSample
from deployments.slo.collect import BUCKET_NAMES, DOWNSAMPLE_S, INTERVAL_S, SUM_FIELDS, TTFT_BUCKET_NAMES, Figures

TEN_SECONDS, FIVE_MINUTES = SloSample.Resolution.TEN_SECONDS, SloSample.Resolution.FIVE_MINUTES
# A 10 s interval is collected a few seconds after it ends: without a row yet it is unknown (a gap), not zero requests.
PENDING_S = 15
# The downsampler writes a 5 min row a little after its span ends; 10 s rows stand in for the spans this recent.
FILL_S = 3 * DOWNSAMPLE_S
ROW_FIELDS = ("interval_start", "revision_id", "resolution", "p95_ms", "ttft_p95_ms", "buckets", *SUM_FIELDS)
TONE_STABLE, TONE_CANARY, TONE_ERRORS = 0, 2, 5
HISTOGRAM_NAMES = (*BUCKET_NAMES, *TTFT_BUCKET_NAMES)


@dataclass(frozen=True)
class ChartRange:
    """One choice of the range picker: how far back, one point per ``step_s``, from which rows, and the ticks."""

    key: str  # the ``range`` query value
    label: str  # on the picker
    caption: str
    span_s: int
    step_s: int
    resolution: str
    tick_s: int
    narrow_tick_s: int

    @property
    def step_name(self) -> str:
        return {INTERVAL_S: "10 s", DOWNSAMPLE_S: "5 min", 3600: "hour"}[self.step_s]


RANGES: dict[str, ChartRange] = {
    r.key: r
    for r in (
        ChartRange("15m", "15 m", "Last 15 minutes", 900, INTERVAL_S, TEN_SECONDS, 300, 300),
        ChartRange("1h", "1 h", "Last hour", 3600, INTERVAL_S, TEN_SECONDS, 600, 1200),
        ChartRange("6h", "6 h", "Last 6 hours", 6 * 3600, DOWNSAMPLE_S, FIVE_MINUTES, 3600, 2 * 3600),
        ChartRange("24h", "24 h", "Last 24 hours", 86_400, DOWNSAMPLE_S, FIVE_MINUTES, 3 * 3600, 6 * 3600),
        ChartRange("7d", "7 d", "Last 7 days", 7 * 86_400, 3600, FIVE_MINUTES, 86_400, 2 * 86_400),
    )
}
DEFAULT_RANGE = RANGES["1h"]


def chosen_range(request: HttpRequest) -> ChartRange:
    """The ``range`` parameter, else the one in the URL of the page that polls (htmx), else the default hour.

    Only the listed keys mean anything: any other value, or an unreadable URL, is the default, never an error.
    """
    key = request.GET.get("range")
    if key is None and getattr(request, "htmx", False):
        key = _range_in(request.headers.get("HX-Current-URL", ""))
    return RANGES.get(key or "", DEFAULT_RANGE)


def _range_in(url: str) -> str | None:
    try:
        values = parse_qs(urlsplit(url).query, max_num_fields=20).get("range")
    except ValueError:  # a malformed URL, or too many fields
        return None
    return values[-1] if values else None


@dataclass(frozen=True)
class Point:
    """One instant of one line: requests and errors, and the percentiles (None when nothing was served)."""

    requests: int
    errors: int
    p95_ms: float | None
    ttft_p95_ms: float | None


def _figures(row: dict[str, Any]) -> dict[str, Any]:
    return {**(row["buckets"] or {}), **{name: row[name] for name in SUM_FIELDS}}


def _point(rows: Sequence[dict[str, Any]], step_s: int) -> Point:
    """A row read as is when it covers the whole step; several rows merged by their histograms."""
    if len(rows) == 1 and _row_seconds(rows[0]) == step_s:
        row = rows[0]
        return Point(row["requests"], row["errors"], row["p95_ms"], row["ttft_p95_ms"])
    merged = Figures()
    for row in rows:
        merged.add(_figures(row))
    fields = merged.sample_fields()
    p95, ttft = cast("float | None", fields["p95_ms"]), cast("float | None", fields["ttft_p95_ms"])
    return Point(merged.requests, merged.sums["errors"], p95, ttft)


def _row_seconds(row: dict[str, Any]) -> int:
    return {TEN_SECONDS: INTERVAL_S, FIVE_MINUTES: DOWNSAMPLE_S}.get(row["resolution"], 0)


def _by_slot(
    rows: Iterable[dict[str, Any]], start: int, step_s: int
) -> dict[int | None, dict[int, list[dict[str, Any]]]]:
    """Rows per line (revision id, None for the whole deployment) and per slot; a 5 min row wins over 10 s rows."""
    rows = list(rows)
    covered = {
        (row["revision_id"], int(row["interval_start"].timestamp()))
        for row in rows
        if row["resolution"] == FIVE_MINUTES
    }
    slots: dict[int | None, dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        epoch = int(row["interval_start"].timestamp())
        if row["resolution"] == TEN_SECONDS and (row["revision_id"], epoch // DOWNSAMPLE_S * DOWNSAMPLE_S) in covered:
            continue
        slots[row["revision_id"]][(epoch - start) // step_s].append(row)
    return slots


@dataclass(frozen=True)
class Line:
    """The points of one line of the charts, and its name and colour."""

    name: str
    tone: int
    points: list[Point | None]  # None: no row (and, at the newest end, not collected yet)

    def values(self, field: str) -> list[float | None]:
        return [None if p is None else getattr(p, field) for p in self.points]

    def counts(self, field: str) -> list[float | None]:
        """Requests or errors: a slot without a row served nothing (0), unless it may not be collected yet."""
        return [None if p is None else float(getattr(p, field)) for p in self.points]


def _line(name: str, tone: int, slots: dict[int, list[dict[str, Any]]], count: int, step: int, pending: int) -> Line:
    points: list[Point | None] = []
    for index in range(count):
        rows = slots.get(index)
        if rows:
            points.append(_point(rows, step))
        elif index >= pending:
            points.append(None)
        else:
            points.append(Point(0, 0, None, None))
    return Line(name, tone, points)


def slo_charts(
    deployment: ModelDeployment, chosen: ChartRange = DEFAULT_RANGE, now: datetime | None = None
) -> dict[str, Any]:
    """The deployment's SLO charts over ``chosen``, with the range's totals (two queries: routed revisions, rows).

    The totals merge the samples' histograms (``deployments.slo.collect.Figures``), as the rollout gate and the REST
    API do. With two revisions taking traffic, each gets its own line (the newer one is the canary).
    """
    now = now or timezone.now()
    end = int(now.timestamp()) // chosen.step_s * chosen.step_s
    start = end - chosen.span_s
    count = chosen.span_s // chosen.step_s
    routed = list(
        Revision.objects.for_tenant(deployment.tenant_id)
        .filter(deployment=deployment, weight__gt=0)
        .order_by("-number")
        .only("id", "number", "weight")
    )
    split = routed if len(routed) == 2 else []
    rows = _rows(deployment, chosen, [r.pk for r in split], start, end)
    whole_rows = [row for row in rows if row["revision_id"] is None]
    context: dict[str, Any] = {"slo_range": chosen, "slo_ranges": RANGES.values(), "slo_samples": len(whole_rows)}
    if not whole_rows:
        return context
    slots = _by_slot(rows, start, chosen.step_s)
    pending = (int(now.timestamp()) - PENDING_S - start) // chosen.step_s  # slots from here on may be uncollected
    whole = _line("all revisions", TONE_STABLE, slots[None], count, chosen.step_s, pending)
    revisions = []
    if split:
        canary, stable = split
        revisions = [
            _line(f"{canary.name} canary", TONE_CANARY, slots.get(canary.pk, {}), count, chosen.step_s, pending),
            _line(f"{stable.name} stable", TONE_STABLE, slots.get(stable.pk, {}), count, chosen.step_s, pending),
        ]
    axis = TimeAxis(start, chosen.step_s, count, chosen.tick_s, chosen.narrow_tick_s)
    totals = Figures()
    for one in slots[None].values():
        for row in one:
            totals.add(_figures(row))
    summed = totals.sample_fields()
    context.update(
        slo_split=[(r, "canary" if r is split[0] else "stable") for r in split],
        slo_totals={
            "requests": totals.requests,
            "errors": totals.sums["errors"],
            "error_percent": 100 * totals.sums["errors"] / totals.requests if totals.requests else 0.0,
            "p95_ms": summed["p95_ms"],
            "ttft_p95_ms": summed["ttft_p95_ms"],
        },
        slo_objective_ms=deployment.slo_p95_latency_ms,
        **_charts(deployment, chosen, axis, whole, revisions),
    )
    return context


def _rows(
    deployment: ModelDeployment, chosen: ChartRange, revision_ids: list[int], start: int, end: int
) -> list[dict[str, Any]]:
    """The rows of the range, of the whole deployment and of ``revision_ids`` (one query).

    Ranges whose points are as long as a row (10 s, 5 min) read the rows themselves; for hours, Postgres sums each
    hour's 5 min rows, histograms key by key, so thousands of rows never cross into Python.
    """
    samples = (
        SloSample.objects.for_tenant(deployment.tenant_id)
        .filter(deployment=deployment, interval_start__lt=_at(end))
        .filter(Q(revision__isnull=True) | Q(revision__in=revision_ids))
    )
    if chosen.step_s > DOWNSAMPLE_S:
        return _summed(samples.filter(resolution=FIVE_MINUTES, interval_start__gte=_at(start)), chosen.step_s)
    wanted = Q(resolution=chosen.resolution, interval_start__gte=_at(start))
    if chosen.resolution == FIVE_MINUTES:
        wanted |= Q(resolution=TEN_SECONDS, interval_start__gte=_at(max(start, end - FILL_S)))
    return list(samples.filter(wanted).order_by("interval_start").values(*ROW_FIELDS))


SUMMED = "summed"  # the ``resolution`` of a row summed in SQL: always merged (it carries no percentiles)
TRUNCATED = {3600: "hour", 86_400: "day"}  # steps Postgres can sum rows into (``date_trunc``)


def _summed(samples: QuerySet[SloSample], step_s: int) -> list[dict[str, Any]]:
    """Rows summed per revision and ``step_s`` (an hour) in SQL, shaped like sample rows."""
    bucket_sums = {f"sum_{n}": Sum(Cast(KT(f"buckets__{n}"), BigIntegerField())) for n in HISTOGRAM_NAMES}
    summed = (
        samples.annotate(slot=Trunc("interval_start", TRUNCATED[step_s], tzinfo=UTC))
        .values("revision_id", "slot")
        .annotate(**{f"sum_{name}": Sum(name) for name in SUM_FIELDS}, **bucket_sums)
        .order_by("slot")
    )
    return [_summed_row(row) for row in summed]


def _summed_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "interval_start": row["slot"],
        "revision_id": row["revision_id"],
        "resolution": SUMMED,
        "p95_ms": None,
        "ttft_p95_ms": None,
        "buckets": {n: row[f"sum_{n}"] for n in HISTOGRAM_NAMES if row[f"sum_{n}"] is not None},
        **{name: row[f"sum_{name}"] for name in SUM_FIELDS},
    }


def _at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def _charts(
    deployment: ModelDeployment, chosen: ChartRange, axis: TimeAxis, whole: Line, revisions: list[Line]
) -> dict[str, Chart | None]:
    """Requests and errors, p95 latency (against its objective) and TTFT p95 (only when streams were served)."""
    name, span, step = deployment.name, chosen.caption.lower(), chosen.step_name
    lines = revisions or [whole]
    if revisions:
        requests = [TimeSeries(f"{one.name} requests", one.counts("requests"), one.tone) for one in revisions]
        per = f"Requests to each revision of {name}, and errors of all revisions, per {step} over the {span}."
    else:
        requests = [TimeSeries("requests", whole.counts("requests"), TONE_STABLE)]
        per = f"Requests and errors answered by {name} per {step} over the {span}."
    requests.append(TimeSeries("errors", whole.counts("errors"), TONE_ERRORS))
    objective = deployment.slo_p95_latency_ms
    latency = [TimeSeries(one.name if revisions else "p95", one.values("p95_ms"), one.tone) for one in lines]
    ttft = [TimeSeries(one.name if revisions else "TTFT p95", one.values("ttft_p95_ms"), one.tone) for one in lines]
    return {
        "chart_requests": time_chart(
            "slo-requests", f"Requests and errors per {step}", per, axis, requests, f"per {step}"
        ),
        "chart_latency": time_chart(
            "slo-latency",
            "p95 latency",
            f"95th percentile latency of {name} per {step} over the {span}, in milliseconds; no line where nothing "
            "was served" + (f"; its SLO objective is {objective} ms." if objective else "."),
            axis,
            latency,
            "ms",
            unit="ms",
            objective=Objective("objective", float(objective)) if objective else None,
        ),
        "chart_ttft": time_chart(
            "slo-ttft",
            "Time to first token, p95",
            f"95th percentile time to first token of streamed requests to {name} per {step} over the {span}, "
            "in milliseconds.",
            axis,
            ttft,
            "ms",
            unit="ms",
            empty_message="No streamed requests in this range",
        )
        if any(v is not None for one in ttft for v in one.values)
        else None,
    }


class DeploymentSloView(DeploymentMixin):
    """The SLO charts' partial, which the detail page loads with htmx and refreshes every 10 s (a new sample's
    interval); without htmx, the detail page with the charts in place."""

    def get(self, request: HttpRequest, tenant: str, name: str) -> HttpResponse:
        deployment = self.get_deployment(name)
        charts = slo_charts(deployment, chosen_range(request))
        if getattr(request, "htmx", False):
            context = self.base_context(deployment=deployment, slo_loaded=True, **charts)
            return render(request, "deployments/partials/slo_charts.html", context)
        return self.render_detail(slo_loaded=True, **charts)
