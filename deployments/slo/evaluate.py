"""SLO evaluation with multi-window burn rates (Google SRE workbook, "Alerting on SLOs", recommendation 6).

A deployment's objectives are an error rate (``slo_error_rate``: the share of requests allowed to fail) and a p95
latency (``slo_p95_latency_ms``: at most 5 % of requests may be slower). The burn rate of a window is the share
of bad requests divided by the share allowed; an alert pair fires when both its long and its short window burn
faster than its factor (the short window makes the alert stop soon after the problem does). The pairs are the
workbook's fast-burn page (1 h & 5 min at 14.4: 2 % of a 30-day budget in an hour) and slow-burn page (6 h & 30 min
at 6). A breach and the recovery after it are recorded once each as events, and sent to the tenant's webhook.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.utils import timezone

from controlplane.contracts.env import env_int
from deployments.models import DeploymentEvent, ModelDeployment, SloStatus
from deployments.slo import collect as slo
from tenants.models import TenantSettings

logger = logging.getLogger(__name__)

LATENCY_BUDGET = 0.05  # a p95 objective lets 5 % of requests be slower than it


@dataclass(frozen=True)
class BurnAlert:
    long_s: int
    short_s: int
    factor: float


ALERTS = (BurnAlert(3600, 300, 14.4), BurnAlert(6 * 3600, 1800, 6.0))
# A window with fewer requests than this says nothing (one failed request out of three is not a breach).
MIN_REQUESTS = env_int("FRONTDOOR_SLO_MIN_REQUESTS", 20)


@dataclass(frozen=True)
class Verdict:
    breached: bool
    reason: str


def burn_rates(figures: slo.Figures, deployment: ModelDeployment) -> dict[str, float]:
    """Burn rate per objective over the figures of one window (objectives not set are left out)."""
    rates: dict[str, float] = {}
    if not figures.requests:
        return rates
    if deployment.slo_error_rate is not None:
        allowed = max(deployment.slo_error_rate, 1e-6)
        rates["error rate"] = figures.sums["errors"] / figures.requests / allowed
    if deployment.slo_p95_latency_ms is not None:
        slow = slo.fraction_slower_than(slo._complete(figures.buckets, figures.requests), deployment.slo_p95_latency_ms)
        rates["p95 latency"] = slow / LATENCY_BUDGET
    return rates


def evaluate(deployment: ModelDeployment, now: datetime | None = None) -> Verdict:
    """Is any objective burning its budget too fast in both windows of an alert pair?"""
    now = now or timezone.now()
    reasons: list[str] = []
    cache: dict[int, slo.Figures] = {}

    def figures(seconds: int) -> slo.Figures:
        if seconds not in cache:
            cache[seconds] = slo.window(deployment.pk, None, now - timedelta(seconds=seconds))
        return cache[seconds]

    for alert in ALERTS:
        long_fig, short_fig = figures(alert.long_s), figures(alert.short_s)
        if long_fig.requests < MIN_REQUESTS or short_fig.requests < 1:
            continue
        long_rates, short_rates = burn_rates(long_fig, deployment), burn_rates(short_fig, deployment)
        for objective, long_rate in long_rates.items():
            short_rate = short_rates.get(objective, 0.0)
            if long_rate >= alert.factor and short_rate >= alert.factor:
                reasons.append(
                    f"{objective} burning its budget {long_rate:.1f}x over {alert.long_s // 60} min and "
                    f"{short_rate:.1f}x over {alert.short_s // 60} min (alert at {alert.factor}x)"
                )
    return Verdict(bool(reasons), "; ".join(dict.fromkeys(reasons)))


def evaluate_all(now: datetime | None = None) -> dict[str, int]:
    """Evaluate every running deployment with an objective; record each breach and recovery once."""
    now = now or datetime.now(tz=UTC)
    counts = {"evaluated": 0, "breached": 0, "recovered": 0}
    deployments = ModelDeployment.objects.unscoped().filter(
        desired_state=ModelDeployment.DesiredState.RUNNING
    ).exclude(slo_error_rate__isnull=True, slo_p95_latency_ms__isnull=True).select_related("tenant")
    for deployment in deployments:
        counts["evaluated"] += 1
        verdict = evaluate(deployment, now)
        changed = record_transition(deployment, verdict)
        if changed:
            counts["breached" if verdict.breached else "recovered"] += 1
    return counts


def record_transition(deployment: ModelDeployment, verdict: Verdict) -> bool:
    """Flip the stored SLO state if the verdict differs; the event and webhook go out only for the flip."""
    SloStatus.objects.get_or_create(deployment=deployment)
    with transaction.atomic():
        # Claim the transition with a conditional UPDATE: two evaluators racing record it once.
        flipped = SloStatus.objects.filter(deployment=deployment, breached=not verdict.breached).update(
            breached=verdict.breached, reason=verdict.reason, changed_at=timezone.now()
        )
        if not flipped:
            return False
        if verdict.breached:
            DeploymentEvent.record(deployment, "SLOBreached", verdict.reason, warning=True)
        else:
            DeploymentEvent.record(deployment, "SLORecovered", "error rate and p95 latency back within budget")
        _set_condition(deployment, verdict)
        transaction.on_commit(lambda: notify(deployment, verdict))
    return True


def _set_condition(deployment: ModelDeployment, verdict: Verdict) -> None:
    # Race: the reconciler writing conditions at the same moment; the row lock orders the two writers.
    current = ModelDeployment.unscoped_objects.select_for_update().only("conditions").get(pk=deployment.pk)
    reason = "BurnRateTooHigh" if verdict.breached else "WithinBudget"
    if current.set_condition("SLOBreached", verdict.breached, reason, verdict.reason):
        ModelDeployment.unscoped_objects.filter(pk=deployment.pk).update(conditions=current.conditions)


def notify(deployment: ModelDeployment, verdict: Verdict) -> None:
    """Queue the tenant's webhook (if any) for this transition."""
    url = (
        TenantSettings.objects.for_tenant(deployment.tenant_id).values_list("webhook_url", flat=True).first() or ""
    )
    if not url:
        return
    payload = {
        "type": "slo.breached" if verdict.breached else "slo.recovered",
        "tenant": deployment.tenant.slug,
        "deployment": deployment.name,
        "reason": verdict.reason,
        "at": timezone.now().isoformat(),
    }
    from controlplane.celery import app

    try:
        app.send_task("deployments.send_webhook", args=[deployment.tenant_id, payload], expires=300)
    except Exception:  # a broker outage must not undo the recorded event; the webhook is best effort
        logger.exception("could not queue the SLO webhook of deployment %s", deployment.pk)
