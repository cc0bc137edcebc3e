"""Live figures for the console overview: requests/s, p95, error rate and tokens per deployment; quota bars."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Sum
from django.utils import timezone

from deployments.models import SloSample
from quotas.admission import current_usage
from quotas.models import Quota, UsageRollup

SLO_FRESH_FOR = timedelta(minutes=2)  # older samples are not "live" figures
SAMPLE_SECONDS = 10  # the SLO collector's finest resolution


def live_figures(tenant_id: int, deployment_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Requests/s, p95 and error rate from each deployment's latest SLO sample, and tokens today (2 queries)."""
    figures: dict[int, dict[str, Any]] = {pk: {} for pk in deployment_ids}
    if not deployment_ids:
        return figures
    latest = (
        SloSample.objects.for_tenant(tenant_id)
        .filter(
            deployment_id__in=deployment_ids,
            revision__isnull=True,
            resolution=SloSample.Resolution.TEN_SECONDS,
            interval_start__gte=timezone.now() - SLO_FRESH_FOR,
        )
        .order_by("deployment_id", "-interval_start")
        .distinct("deployment_id")
        .only("deployment_id", "requests", "errors", "p95_ms")
    )
    for sample in latest:
        figures[sample.deployment_id].update(
            rps=sample.requests / SAMPLE_SECONDS, p95_ms=sample.p95_ms, error_rate=sample.error_rate
        )
    midnight = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    tokens = (
        UsageRollup.objects.for_tenant(tenant_id)
        .filter(deployment_id__in=deployment_ids, minute__gte=midnight)
        .values("deployment_id")
        .annotate(tokens=Sum("prompt_tokens") + Sum("completion_tokens"))
    )
    for row in tokens:
        if (deployment_id := row["deployment_id"]) is not None:
            figures[deployment_id]["tokens_today"] = row["tokens"]
    return figures


def quota_bars(tenant: Any) -> list[dict[str, Any]]:
    """Used against allowed for GPUs by type, replicas, deployments and tokens this month."""
    quota = Quota.objects.for_tenant(tenant).first() or Quota(tenant=tenant)
    held = current_usage(tenant, gpu_type="", excluding=None)
    bars: list[dict[str, Any]] = [
        {"label": "Deployments", "used": held.deployments, "limit": quota.max_deployments},
        {"label": "Replicas (max)", "used": held.replicas, "limit": quota.max_replicas},
    ]
    for gpu_type, allowed in sorted(quota.gpus.items()):
        gpus = current_usage(tenant, gpu_type=gpu_type, excluding=None).gpus
        bars.append({"label": f"{gpu_type} GPUs", "used": gpus, "limit": allowed})
    month = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    totals = (
        UsageRollup.objects.for_tenant(tenant)
        .filter(minute__gte=month)
        .aggregate(p=Sum("prompt_tokens"), c=Sum("completion_tokens"))
    )
    bars.append(
        {
            "label": "Tokens this month",
            "used": (totals["p"] or 0) + (totals["c"] or 0),
            "limit": quota.monthly_token_budget,
        }
    )
    for bar in bars:
        used, limit = int(bar["used"]), bar["limit"]
        bar["percent"] = min(100, round(100 * used / limit)) if limit else (0 if limit is None else 100)
        bar["over"] = limit is not None and used > limit
        bar["used_text"] = f"{used:,}"
        bar["limit_text"] = "unlimited" if limit is None else f"{limit:,}"
    return bars
