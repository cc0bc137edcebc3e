"""The SLO charts partial of a deployment's detail page: the last hour of 10 s samples as SVG."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from controlplane.charts import Series, line_chart
from deployments.console.figures import SAMPLE_SECONDS
from deployments.console.views import DeploymentMixin
from deployments.models import ModelDeployment, SloSample
from deployments.slo.collect import SUM_FIELDS, figures_of

CHART_SPAN = timedelta(hours=1)  # the detail page's SLO charts: the last hour of 10 s samples (360 slots)


def slo_charts(deployment: ModelDeployment, now: datetime | None = None) -> dict[str, Any]:
    """The last hour of the deployment's 10 s samples (all revisions together) as three SVG charts (one query).

    The x axis is the hour in 10 s slots, so idle stretches show as such; a slot without a sample counts 0 requests,
    and latency is drawn at 0 where nothing was served (the SVG charts have no gaps). The totals over the hour merge
    the samples' histograms (``deployments.slo.collect.figures_of``), as the rollout gate and the REST API do.
    """
    now = now or timezone.now()
    start_epoch = (int(now.timestamp()) // SAMPLE_SECONDS) * SAMPLE_SECONDS - int(CHART_SPAN.total_seconds())
    samples = list(
        SloSample.objects.for_tenant(deployment.tenant_id)
        .filter(
            deployment=deployment,
            revision__isnull=True,
            resolution=SloSample.Resolution.TEN_SECONDS,
            interval_start__gte=datetime.fromtimestamp(start_epoch, tz=UTC),
        )
        .order_by("interval_start")
        .only("interval_start", "p95_ms", "ttft_p95_ms", "buckets", *SUM_FIELDS)
    )
    if not samples:
        return {"slo_samples": 0}
    slots = int(CHART_SPAN.total_seconds()) // SAMPLE_SECONDS
    by_slot = {(int(s.interval_start.timestamp()) - start_epoch) // SAMPLE_SECONDS: s for s in samples}
    row = [by_slot.get(i) for i in range(slots)]
    labels = [
        timezone.localtime(datetime.fromtimestamp(start_epoch + i * SAMPLE_SECONDS, tz=UTC)).strftime("%H:%M:%S")
        for i in range(slots)
    ]
    requests = [float(s.requests) if s else 0.0 for s in row]
    errors = [float(s.errors) if s else 0.0 for s in row]
    p95 = [float(s.p95_ms or 0) if s else 0.0 for s in row]
    ttft = [float(s.ttft_p95_ms or 0) if s else 0.0 for s in row]
    latency_series = [Series("p95 latency", p95)]
    objective = deployment.slo_p95_latency_ms
    if objective:
        latency_series.append(Series(f"SLO objective ({objective} ms)", [float(objective)] * slots))
    summed = figures_of(samples)
    hour = summed.sample_fields()
    total_requests, total_errors = summed.requests, summed.sums["errors"]
    name = deployment.name
    return {
        "slo_samples": len(samples),
        "slo_totals": {
            "requests": total_requests,
            "errors": total_errors,
            "error_percent": 100 * total_errors / total_requests if total_requests else 0.0,
            "p95_ms": hour["p95_ms"],
            "ttft_p95_ms": hour["ttft_p95_ms"],
        },
        "slo_objective_ms": objective,
        "chart_requests": line_chart(
            "slo-requests",
            "Requests and errors per 10 s",
            f"Requests and errors answered by {name} in each 10 second interval of the last hour.",
            labels,
            [Series("requests", requests), Series("errors", errors)],
            "per 10 s",
        ),
        "chart_latency": line_chart(
            "slo-latency",
            "p95 latency",
            f"95th percentile latency of {name} per 10 seconds over the last hour, in milliseconds"
            + (f", against its SLO objective of {objective} ms." if objective else "."),
            labels,
            latency_series,
            "ms",
        ),
        "chart_ttft": line_chart(
            "slo-ttft",
            "Time to first token, p95",
            f"95th percentile time to first token of streamed requests to {name} per 10 seconds, in milliseconds.",
            labels,
            [Series("TTFT p95", ttft)],
            "ms",
        )
        if any(ttft)
        else None,
    }


class DeploymentSloView(DeploymentMixin):
    """The SLO charts' partial, which the detail page loads with htmx and refreshes every 10 s (a new sample's
    interval); without htmx, the detail page with the charts in place."""

    def get(self, request: HttpRequest, tenant: str, name: str) -> HttpResponse:
        deployment = self.get_deployment(name)
        charts = slo_charts(deployment)
        if getattr(request, "htmx", False):
            context = self.base_context(deployment=deployment, slo_loaded=True, **charts)
            return render(request, "deployments/partials/slo_charts.html", context)
        return self.render_detail(slo_loaded=True, **charts)
