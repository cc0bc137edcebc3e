"""Live figures for the console: requests/s, p95, error rate and tokens per deployment (the overview), quota bars,
and where a running rollout stands against its gate (the deployment's rollout panel)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Sum
from django.utils import timezone

from deployments import rollout as rollouts
from deployments.models import Rollout, SloSample
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


# ---------------------------------------------------------------- the rollout panel


@dataclass(frozen=True)
class RolloutProgress:
    """Where a running rollout stands, for its panel: what the next step is, when the gate judges the current one,
    what it waits for, and the canary against the stable revision over the window the gate compares."""

    comparison: rollouts.Comparison
    window_start: datetime
    gated_window: bool  # the canary is ready: the figures are over the very window the gate will judge
    next_weight: int
    judged_at: datetime | None  # when the step's watch ends (None: it has not started, or the rollout is paused)
    waiting_for: str  # what else holds the step before it can be judged ("" when only time does)
    breach: str | None  # why the canary is out of bounds now (it rolls back if it still is when judged), or None
    max_error_points: float  # the gate's bounds: error rate points above the stable revision's …
    max_p95_ratio: float  # … and p95 latency as a multiple of the stable revision's
    as_of: datetime  # when these figures were read

    @property
    def seconds_left(self) -> int | None:
        if self.judged_at is None:
            return None
        return max(0, int((self.judged_at - self.as_of).total_seconds()))

    @property
    def until_text(self) -> str:
        """The wait before the step is judged, in the words of the console's relative times: "in 25 s", "in 3 min",
        "in 2 h", or "now" (deployment.js counts it down the same way between two polls)."""
        seconds = self.seconds_left
        if seconds is None:
            return ""
        if seconds == 0:
            return "now"
        if seconds < 60:
            return f"in {seconds} s"
        return f"in {seconds // 60} min" if seconds < 3600 else f"in {seconds // 3600} h"

    @property
    def canary_error_percent(self) -> float | None:
        """The canary's error rate in percent; None when it served nothing in the window."""
        return 100 * self.comparison.canary_error_rate if self.comparison.canary_requests else None

    @property
    def stable_error_percent(self) -> float | None:
        # The comparison counts the canary's requests only; a stable revision that served nothing has no p95.
        return 100 * self.comparison.stable_error_rate if self.comparison.stable_p95_ms is not None else None


def rollout_progress(rollout: Rollout, now: datetime | None = None) -> RolloutProgress:
    """The panel's view of a running rollout, read the way ``deployments.rollout.advance`` judges it (two queries).

    Before the canary is ready the step's watch has not begun; the figures then run from the step's start, so the
    panel shows what the canary serves meanwhile.
    """
    now = now or timezone.now()
    ready_at = rollout.step_ready_at
    comparison = rollouts.compare(rollout, ready_at or rollout.step_started_at)
    canary = rollout.revision.name
    if rollout.paused:
        waiting_for = "the rollout to be resumed"
    elif ready_at is None:
        waiting_for = f"{canary}'s replicas to be ready, then a {rollout.pause_s} s watch"
    elif comparison.canary_requests < rollout.min_requests:
        served = comparison.canary_requests
        waiting_for = f"{canary} to serve {rollout.min_requests} requests in this step ({served} so far)"
    else:
        waiting_for = ""
    judged_at = None
    if ready_at is not None and not rollout.paused:
        judged_at = ready_at + timedelta(seconds=rollout.pause_s)
    return RolloutProgress(
        comparison=comparison,
        window_start=ready_at or rollout.step_started_at,
        gated_window=ready_at is not None,
        next_weight=int(rollout.steps[min(rollout.step_index + 1, len(rollout.steps) - 1)]),
        judged_at=judged_at,
        waiting_for=waiting_for,
        breach=comparison.breach(rollout) if ready_at is not None else None,
        max_error_points=100 * rollout.max_error_rate_delta,
        max_p95_ratio=rollout.max_p95_ratio,
        as_of=now,
    )
