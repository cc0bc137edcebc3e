"""The canary controller: it waits for the canary, pauses per step, compares canary with stable over the same
window, steps up while within bounds, rolls back on a breach, and leaves events that say what happened."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from controlplane.domain_errors import Invalid, RolloutConflict
from deployments import rollout as rollouts
from deployments import services
from deployments.models import DeploymentEvent, ModelDeployment, Revision, Rollout
from tenants.models import Tenant
from tests.support.scaling import add_revision, sample


@pytest.fixture
def canary_setup(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment]
) -> tuple[ModelDeployment, Revision, Revision]:
    deployment = make_deployment(acme, min_replicas=1, max_replicas=2)
    stable = deployment.revisions.get()
    Revision.unscoped_objects.filter(pk=stable.pk).update(ready_replicas=1, desired_replicas=1)
    canary = add_revision(deployment, weight=0)
    return deployment, stable, canary


def _weights(deployment: ModelDeployment) -> dict[str, int]:
    return {r.name: r.weight for r in Revision.unscoped_objects.filter(deployment=deployment)}


def _canary_ready(canary: Revision) -> None:
    Revision.unscoped_objects.filter(pk=canary.pk).update(ready_replicas=1, desired_replicas=1)


def _traffic(
    deployment: ModelDeployment,
    stable: Revision,
    canary: Revision,
    since: datetime,
    *,
    canary_errors: int = 0,
    canary_latency_ms: float = 40.0,
) -> None:
    """Three 10 s samples for each revision from ``since`` on."""
    for step in range(3):
        start = since + timedelta(seconds=10 * step)
        sample(deployment, stable, start, requests=20, errors=0, latency_ms=40.0)
        sample(deployment, canary, start, requests=10, errors=canary_errors, latency_ms=canary_latency_ms)


def _through_one_step(
    rollout: Rollout, deployment: ModelDeployment, stable: Revision, canary: Revision, start: datetime, **traffic: float
) -> str:
    """Walk one step: canary seen ready, the pause passes with traffic, then the step is judged."""
    assert rollouts.advance(rollout.pk, start) == "canary ready; pause started"
    assert rollouts.advance(rollout.pk, start + timedelta(seconds=10)) == "pausing"
    _traffic(deployment, stable, canary, start, **traffic)  # type: ignore[arg-type]
    return rollouts.advance(rollout.pk, start + timedelta(seconds=31))


def _reasons(deployment: ModelDeployment) -> list[tuple[str, str]]:
    return list(
        DeploymentEvent.unscoped_objects.filter(deployment=deployment, reason__startswith="Rollout")
        .order_by("id")
        .values_list("reason", "kind")
    )


@pytest.mark.django_db
def test_a_healthy_canary_reaches_100_percent(canary_setup: tuple[ModelDeployment, Revision, Revision]) -> None:
    deployment, stable, canary = canary_setup
    rollout = rollouts.start_rollout(
        deployment, actor=None, revision_number=canary.number, steps=[10, 50, 100], pause_s=30, min_requests=5
    )
    assert _weights(deployment) == {"r1": 90, "r2": 10}
    assert rollouts.advance(rollout.pk) == "waiting for the canary to be ready"
    _canary_ready(canary)
    start = timezone.now()
    assert _through_one_step(rollout, deployment, stable, canary, start) == "stepped to 50%"
    assert _weights(deployment) == {"r1": 50, "r2": 50}
    later = start + timedelta(minutes=1)
    assert _through_one_step(rollout, deployment, stable, canary, later) == "succeeded"
    assert _weights(deployment) == {"r1": 0, "r2": 100}
    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.SUCCEEDED and rollout.finished_at is not None
    assert _reasons(deployment) == [
        ("RolloutStarted", "Normal"),
        ("RolloutStepped", "Normal"),
        ("RolloutStepped", "Normal"),
        ("RolloutSucceeded", "Normal"),
    ]


@pytest.mark.django_db
def test_a_canary_returning_errors_is_rolled_back(canary_setup: tuple[ModelDeployment, Revision, Revision]) -> None:
    deployment, stable, canary = canary_setup
    rollout = rollouts.start_rollout(deployment, actor=None, revision_number=canary.number, pause_s=30, min_requests=5)
    _canary_ready(canary)
    outcome = _through_one_step(rollout, deployment, stable, canary, timezone.now(), canary_errors=5)
    assert outcome == "rolled back"
    assert _weights(deployment) == {"r1": 100, "r2": 0}
    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.ROLLED_BACK
    assert "error rate 50.0%" in rollout.reason
    last = DeploymentEvent.unscoped_objects.filter(deployment=deployment).order_by("-id").first()
    assert last is not None and (last.reason, last.kind) == ("RolloutRolledBack", "Warning")
    assert "error rate" in last.message
    assert rollouts.advance(rollout.pk) == "gone"  # a finished rollout is left alone


@pytest.mark.django_db
def test_a_slow_canary_is_rolled_back(canary_setup: tuple[ModelDeployment, Revision, Revision]) -> None:
    deployment, stable, canary = canary_setup
    rollout = rollouts.start_rollout(
        deployment, actor=None, revision_number=canary.number, pause_s=30, min_requests=5, max_p95_ratio=1.5
    )
    _canary_ready(canary)
    outcome = _through_one_step(rollout, deployment, stable, canary, timezone.now(), canary_latency_ms=900.0)
    assert outcome == "rolled back"
    rollout.refresh_from_db()
    assert "p95 latency" in rollout.reason


@pytest.mark.django_db
def test_it_waits_for_enough_canary_requests(canary_setup: tuple[ModelDeployment, Revision, Revision]) -> None:
    deployment, stable, canary = canary_setup
    rollout = rollouts.start_rollout(
        deployment, actor=None, revision_number=canary.number, pause_s=30, min_requests=100
    )
    _canary_ready(canary)
    outcome = _through_one_step(rollout, deployment, stable, canary, timezone.now())
    assert outcome.startswith("waiting for 100 canary requests")
    assert _weights(deployment) == {"r1": 90, "r2": 10}


@pytest.mark.django_db
def test_a_paused_rollout_does_not_advance(canary_setup: tuple[ModelDeployment, Revision, Revision]) -> None:
    deployment, _stable, canary = canary_setup
    rollout = rollouts.start_rollout(deployment, actor=None, revision_number=canary.number, pause_s=0, min_requests=0)
    _canary_ready(canary)
    rollouts.act(deployment, "pause", actor=None)
    assert rollouts.advance(rollout.pk) == "paused"
    rollouts.act(deployment, "resume", actor=None)
    assert rollouts.advance(rollout.pk) == "canary ready; pause started"


@pytest.mark.django_db
def test_manual_promote_and_rollback(canary_setup: tuple[ModelDeployment, Revision, Revision]) -> None:
    deployment, _stable, canary = canary_setup
    rollouts.start_rollout(deployment, actor=None, revision_number=canary.number)
    rollouts.act(deployment, "rollback", actor=None)
    assert _weights(deployment) == {"r1": 100, "r2": 0}
    rollout = rollouts.start_rollout(deployment, actor=None, revision_number=canary.number)
    rollouts.act(deployment, "promote", actor=None)
    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.SUCCEEDED
    assert _weights(deployment) == {"r1": 0, "r2": 100}


@pytest.mark.django_db
def test_it_refuses_a_second_rollout_and_bad_steps(canary_setup: tuple[ModelDeployment, Revision, Revision]) -> None:
    deployment, _stable, canary = canary_setup
    with pytest.raises(Invalid):
        rollouts.start_rollout(deployment, actor=None, revision_number=canary.number, steps=[50, 25, 100])
    with pytest.raises(Invalid):
        rollouts.start_rollout(deployment, actor=None, revision_number=canary.number, steps=[10, 50])
    with pytest.raises(Invalid):
        rollouts.start_rollout(deployment, actor=None, revision_number=9)
    rollouts.start_rollout(deployment, actor=None, revision_number=canary.number)
    with pytest.raises(RolloutConflict):
        rollouts.start_rollout(deployment, actor=None, revision_number=canary.number)


def test_traffic_and_new_revisions_by_hand_are_refused_while_a_rollout_runs(
    canary_setup: tuple[ModelDeployment, Revision, Revision],
) -> None:
    deployment, stable, canary = canary_setup
    rollouts.start_rollout(deployment, actor=None, revision_number=canary.number, steps=[10, 50, 100])
    with pytest.raises(RolloutConflict, match="is running and sets the traffic itself"):
        services.set_traffic(deployment, {stable.number: 50, canary.number: 50}, actor=None)
    with pytest.raises(RolloutConflict, match="is running and sets the traffic itself"):
        services.update_deployment(deployment, {"args": ["--stall-ms", "2"]}, actor=None)
    weights = dict(Revision.unscoped_objects.filter(deployment=deployment).values_list("number", "weight"))
    assert weights == {stable.number: 90, canary.number: 10}  # the rollout's first step, untouched
    services.update_deployment(deployment, {"max_replicas": deployment.max_replicas}, actor=None)  # no new revision
