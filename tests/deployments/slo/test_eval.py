"""Burn-rate evaluation: a fast burn is recorded once as ``SLOBreached``, its end once as ``SLORecovered``, and the
tenant's webhook is queued for each transition."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from deployments.models import DeploymentEvent, ModelDeployment, SloSample, SloStatus
from deployments.slo import evaluate as sloeval
from tenants.models import Tenant, TenantSettings
from tests.support.broker import Broker
from tests.support.scaling import sample

NOW = datetime(2027, 1, 15, 12, 0, tzinfo=UTC)


def _fill(deployment: ModelDeployment, minutes: int, *, errors_per_sample: int, latency_ms: float = 40.0) -> None:
    """Samples of 10 requests every 10 s over the last ``minutes``."""
    for step in range(minutes * 6):
        start = NOW - timedelta(seconds=10 * (step + 1))
        sample(deployment, None, start, requests=10, errors=errors_per_sample, latency_ms=latency_ms)


def _slo_events(deployment: ModelDeployment) -> list[tuple[str, str]]:
    return list(
        DeploymentEvent.unscoped_objects.filter(deployment=deployment, reason__startswith="SLO")
        .order_by("id").values_list("reason", "kind")
    )


@pytest.mark.django_db
def test_it_records_a_fast_error_burn_once_and_its_recovery_once(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment]
) -> None:
    deployment = make_deployment(acme, slo_error_rate=0.01)
    _fill(deployment, 10, errors_per_sample=5)  # 50 % errors against a 1 % budget: burn 50x
    assert sloeval.evaluate_all(now=NOW)["breached"] == 1
    assert sloeval.evaluate_all(now=NOW)["breached"] == 0  # still breached: no second event
    assert _slo_events(deployment) == [("SLOBreached", "Warning")]
    deployment.refresh_from_db()
    assert [c["status"] for c in deployment.conditions if c["type"] == "SLOBreached"] == ["True"]
    assert "error rate" in SloStatus.objects.get(deployment=deployment).reason

    SloSample.unscoped_objects.filter(deployment=deployment).delete()
    _fill(deployment, 10, errors_per_sample=0)
    assert sloeval.evaluate_all(now=NOW)["recovered"] == 1
    assert sloeval.evaluate_all(now=NOW)["recovered"] == 0
    assert _slo_events(deployment) == [("SLOBreached", "Warning"), ("SLORecovered", "Normal")]


@pytest.mark.django_db
def test_it_detects_a_latency_burn_from_the_histogram(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment]
) -> None:
    deployment = make_deployment(acme, slo_p95_latency_ms=200)
    _fill(deployment, 10, errors_per_sample=0, latency_ms=900)
    verdict = sloeval.evaluate(deployment, NOW)
    assert verdict.breached and "p95 latency" in verdict.reason


@pytest.mark.django_db
def test_it_stays_quiet_within_budget_and_on_too_little_traffic(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment]
) -> None:
    healthy = make_deployment(acme, name="healthy", slo_error_rate=0.05, slo_p95_latency_ms=500)
    _fill(healthy, 10, errors_per_sample=0, latency_ms=80)
    quiet = make_deployment(acme, name="quiet", slo_error_rate=0.01)
    sample(quiet, None, NOW - timedelta(seconds=30), requests=2, errors=2)  # 2 failures are not a trend
    sloeval.evaluate_all(now=NOW)
    assert _slo_events(healthy) == [] and _slo_events(quiet) == []


@pytest.mark.django_db
def test_a_short_spike_without_a_long_burn_does_not_alert(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment]
) -> None:
    deployment = make_deployment(acme, slo_error_rate=0.01)
    for step in range(360):  # an hour of traffic, 100 requests per 10 s; the last minute fails entirely
        sample(deployment, None, NOW - timedelta(seconds=10 * (step + 1)), requests=100, errors=100 if step < 6 else 0)
    short = sloeval.burn_rates(sloeval.slo.window(deployment.pk, None, NOW - timedelta(minutes=5)), deployment)
    assert short["error rate"] > 14.4  # the short window alone would page
    assert not sloeval.evaluate(deployment, NOW).breached


@pytest.mark.django_db(transaction=True)
def test_it_queues_the_tenant_webhook_on_each_transition(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment], broker: Broker
) -> None:
    TenantSettings.unscoped_objects.create(tenant=acme, webhook_url="https://hooks.example.com/frontdoor")
    deployment = make_deployment(acme, slo_error_rate=0.01)
    broker.clear()
    _fill(deployment, 10, errors_per_sample=5)
    sloeval.evaluate_all(now=NOW)
    sent = [m for m in broker.messages() if m["headers"]["task"] == "deployments.send_webhook"]
    assert len(sent) == 1
    args, _kwargs, _embed = json.loads(base64.b64decode(sent[0]["body"]))
    assert args[0] == acme.pk
    assert args[1]["type"] == "slo.breached" and args[1]["deployment"] == "chat"
