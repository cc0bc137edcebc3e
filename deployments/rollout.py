"""Metric-gated canary rollouts: weight steps that advance only while the canary is as good as the stable revision.

A rollout moves traffic to ``revision`` in ``steps`` (default 10 → 25 → 50 → 100). Each ``rollout_tick`` (10 s):

1. paused, or the canary not ready yet (weights are set, replicas still starting): wait; the stable revision keeps
   its replicas meanwhile (``reconcile.plan_replicas`` never drains it before the canary is ready);
2. once the canary has been ready for ``pause_s`` at this step and served ``min_requests`` in that time, compare it
   with the stable revision over the same window, from the SLO samples: error rate no more than
   ``max_error_rate_delta`` above the stable one's, p95 latency no more than ``max_p95_ratio`` times it;
3. within bounds: next step (the last step, 100, ends the rollout as succeeded); out of bounds: all traffic back to
   the stable revision, the rollout rolled back, and a Warning event that says why.

Traffic changes go through ``deployments.services.set_traffic`` (audited, generation bumped, reconcile enqueued).
``start_rollout`` and ``act`` follow the services' actor convention (``actor`` keyword-only and required, ``None``
for the system; ``request_id`` for the audit events); the controller's own steps act as the system. Refusals are
``controlplane.domain_errors``: ``Invalid``, ``RolloutConflict``, ``Deleting``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from controlplane.access import Principal
from controlplane.domain_errors import Deleting, Invalid, RolloutConflict
from deployments.models import DeploymentEvent, ModelDeployment, Revision, Rollout
from deployments.services import set_traffic
from deployments.slo import collect as slo

logger = logging.getLogger(__name__)

DEFAULT_STEPS = (10, 25, 50, 100)


@dataclass(frozen=True)
class Comparison:
    """Canary against stable over one window."""

    canary_requests: int
    canary_error_rate: float
    stable_error_rate: float
    canary_p95_ms: float | None
    stable_p95_ms: float | None

    def breach(self, rollout: Rollout) -> str | None:
        """Why the canary is out of bounds, or None."""
        delta = self.canary_error_rate - self.stable_error_rate
        if delta > rollout.max_error_rate_delta:
            return (
                f"canary error rate {self.canary_error_rate:.1%} exceeds the stable revision's "
                f"{self.stable_error_rate:.1%} by more than {rollout.max_error_rate_delta:.1%}"
            )
        if self.canary_p95_ms is not None and self.stable_p95_ms:
            ratio = self.canary_p95_ms / self.stable_p95_ms
            if ratio > rollout.max_p95_ratio:
                return (
                    f"canary p95 latency {self.canary_p95_ms:.0f} ms is {ratio:.2f}x the stable revision's "
                    f"{self.stable_p95_ms:.0f} ms (limit {rollout.max_p95_ratio}x)"
                )
        return None


def compare(rollout: Rollout, since: datetime) -> Comparison:
    canary = slo.window(rollout.deployment_id, rollout.revision_id, since)
    stable = slo.window(rollout.deployment_id, rollout.stable_revision_id, since)
    canary_fields, stable_fields = canary.sample_fields(), stable.sample_fields()

    def error_rate(figures: slo.Figures) -> float:
        return figures.sums["errors"] / figures.requests if figures.requests else 0.0

    return Comparison(
        canary_requests=canary.requests,
        canary_error_rate=error_rate(canary),
        stable_error_rate=error_rate(stable),
        canary_p95_ms=canary_fields["p95_ms"],  # type: ignore[arg-type]
        stable_p95_ms=stable_fields["p95_ms"],  # type: ignore[arg-type]
    )


def _validate_steps(steps: Sequence[Any]) -> list[int]:
    if (
        not isinstance(steps, list | tuple)
        or not steps
        or not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 100 for s in steps)
    ):
        raise Invalid({"steps": ["a list of traffic percentages between 1 and 100"]})
    if list(steps) != sorted(set(steps)) or steps[-1] != 100:
        raise Invalid({"steps": ["steps must increase and end at 100"]})
    return [int(s) for s in steps]


def running_rollout(deployment: ModelDeployment) -> Rollout | None:
    return Rollout.objects.for_tenant(deployment.tenant_id).filter(
        deployment=deployment, status=Rollout.Status.RUNNING
    ).select_related("revision", "stable_revision").first()


@transaction.atomic
def start_rollout(
    deployment: ModelDeployment,
    *,
    revision_number: int,
    steps: Sequence[int] = DEFAULT_STEPS,
    pause_s: int = 30,
    max_error_rate_delta: float = 0.05,
    max_p95_ratio: float = 1.5,
    min_requests: int = 10,
    actor: Principal | None,
    request_id: str = "",
) -> Rollout:
    """Start moving traffic to revision ``revision_number``; its first step's weight is set at once."""
    steps = _validate_steps(list(steps))
    # Race: two starts for one deployment; the deployment row lock orders them (the partial unique index backs it).
    current = ModelDeployment.objects.for_tenant(deployment.tenant_id).select_for_update().get(pk=deployment.pk)
    if current.desired_state == ModelDeployment.DesiredState.DELETING:
        raise Deleting()
    if running_rollout(current) is not None:
        raise RolloutConflict("a rollout is already running; promote or roll it back first")
    revisions = {r.number: r for r in Revision.unscoped_objects.filter(deployment=current)}
    canary = revisions.get(revision_number)
    if canary is None:
        raise Invalid({"revision": [f"there is no revision r{revision_number}"]})
    serving = [r for r in revisions.values() if r.weight > 0 and r.pk != canary.pk]
    if not serving:
        raise Invalid({"revision": [f"r{revision_number} is the only serving revision; nothing to compare"]})
    stable = max(serving, key=lambda r: (r.weight, r.number))
    problems = {}
    if not 0 <= max_error_rate_delta <= 1:
        problems["max_error_rate_delta"] = ["between 0 and 1"]
    if max_p95_ratio < 1:
        problems["max_p95_ratio"] = ["at least 1"]
    if not 0 <= pause_s <= 86_400:
        problems["pause_s"] = ["between 0 and 86400 seconds"]
    if min_requests < 0:
        problems["min_requests"] = ["0 or more"]
    if problems:
        raise Invalid(problems)
    now = timezone.now()
    rollout = Rollout.unscoped_objects.create(
        tenant_id=current.tenant_id, deployment=current, revision=canary, stable_revision=stable, steps=steps,
        pause_s=pause_s, max_error_rate_delta=max_error_rate_delta, max_p95_ratio=max_p95_ratio,
        min_requests=min_requests, started_at=now, step_started_at=now,
    )
    DeploymentEvent.record(
        current, "RolloutStarted",
        f"canary {canary.name} against {stable.name} in steps {', '.join(map(str, steps))}% (pause {pause_s} s)",
    )
    _set_weight(rollout, current, steps[0], actor=actor, request_id=request_id)
    if steps[0] == 100:
        _finish(rollout, current, Rollout.Status.SUCCEEDED, "the first step is 100%", now)
    return rollout


def _set_weight(
    rollout: Rollout, deployment: ModelDeployment, weight: int, *, actor: Principal | None, request_id: str = ""
) -> None:
    weights = {rollout.stable_revision.number: 100 - weight, rollout.revision.number: weight}
    set_traffic(deployment, weights, actor=actor, request_id=request_id, by_rollout=True)


def _finish(rollout: Rollout, deployment: ModelDeployment, status: str, reason: str, now: datetime) -> None:
    rollout.status, rollout.reason, rollout.finished_at = status, reason, now
    rollout.save(update_fields=["status", "reason", "finished_at"])
    if status == Rollout.Status.SUCCEEDED:
        DeploymentEvent.record(deployment, "RolloutSucceeded", f"{rollout.revision.name} takes 100% ({reason})")
    else:
        DeploymentEvent.record(
            deployment, "RolloutRolledBack",
            f"{rollout.revision.name} rolled back; {rollout.stable_revision.name} takes 100%: {reason}", warning=True,
        )


def _locked(rollout_id: int) -> Rollout | None:
    """The rollout, row-locked, if still running; None when another tick holds it or it has ended."""
    # Race: two ticks (or a tick and a manual action) acting on one rollout; the row lock makes it one at a time.
    return (
        Rollout.unscoped_objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("revision", "stable_revision", "deployment")
        .filter(pk=rollout_id, status=Rollout.Status.RUNNING)
        .first()
    )


def _canary_ready(canary: Revision) -> bool:
    return canary.ready_replicas >= max(1, canary.desired_replicas)


def advance(rollout_id: int, now: datetime | None = None) -> str:
    """One controller step for one rollout; returns what it did (for logs and tests)."""
    now = now or timezone.now()
    with transaction.atomic():
        rollout = _locked(rollout_id)
        if rollout is None:
            return "gone"
        if rollout.paused:
            return "paused"
        canary = Revision.unscoped_objects.get(pk=rollout.revision_id)
        if not _canary_ready(canary):
            return "waiting for the canary to be ready"
        if rollout.step_ready_at is None:
            rollout.step_ready_at = now
            rollout.save(update_fields=["step_ready_at"])
            return "canary ready; pause started"
        if now - rollout.step_ready_at < timedelta(seconds=rollout.pause_s):
            return "pausing"
        comparison = compare(rollout, rollout.step_ready_at)
        deployment = rollout.deployment
        breach = comparison.breach(rollout)
        if breach is not None:
            _rollback(rollout, deployment, breach, now, actor=None)
            return "rolled back"
        if comparison.canary_requests < rollout.min_requests:
            return f"waiting for {rollout.min_requests} canary requests ({comparison.canary_requests} so far)"
        return _next_step(rollout, deployment, now, comparison)


def _next_step(rollout: Rollout, deployment: ModelDeployment, now: datetime, comparison: Comparison) -> str:
    rollout.step_index += 1
    rollout.step_started_at, rollout.step_ready_at = now, None
    rollout.save(update_fields=["step_index", "step_started_at", "step_ready_at"])
    weight = rollout.current_weight
    try:
        _set_weight(rollout, deployment, weight, actor=None)
    except Deleting:
        _finish(rollout, deployment, Rollout.Status.ROLLED_BACK, "the deployment is being deleted", now)
        return "deployment deleting"
    DeploymentEvent.record(
        deployment, "RolloutStepped",
        f"{rollout.revision.name} at {weight}% (canary error rate {comparison.canary_error_rate:.1%} vs "
        f"{comparison.stable_error_rate:.1%}, p95 {_ms(comparison.canary_p95_ms)} vs {_ms(comparison.stable_p95_ms)})",
    )
    if weight >= 100:
        _finish(rollout, deployment, Rollout.Status.SUCCEEDED, "every step stayed within bounds", now)
        return "succeeded"
    return f"stepped to {weight}%"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def _rollback(
    rollout: Rollout,
    deployment: ModelDeployment,
    reason: str,
    now: datetime,
    *,
    actor: Principal | None,
    request_id: str = "",
) -> None:
    weights = {rollout.stable_revision.number: 100, rollout.revision.number: 0}
    set_traffic(deployment, weights, actor=actor, request_id=request_id, by_rollout=True)
    _finish(rollout, deployment, Rollout.Status.ROLLED_BACK, reason, now)


def tick(now: datetime | None = None) -> dict[int, str]:
    """Advance every running rollout (the ``deployments.rollout_tick`` task, every 10 s)."""
    ids = list(Rollout.unscoped_objects.filter(status=Rollout.Status.RUNNING).values_list("pk", flat=True))
    outcomes: dict[int, str] = {}
    for rollout_id in ids:
        try:
            outcomes[rollout_id] = advance(rollout_id, now)
        except Invalid as exc:  # e.g. a revision deleted under the rollout: end it rather than loop
            logger.warning("rollout %s cannot advance: %s", rollout_id, exc)
            outcomes[rollout_id] = f"error: {exc}"
    return outcomes


@transaction.atomic
def act(deployment: ModelDeployment, action: str, *, actor: Principal | None, request_id: str = "") -> Rollout:
    """A manual ``promote`` | ``pause`` | ``resume`` | ``rollback`` of the running rollout."""
    found = running_rollout(deployment)
    if found is None:
        raise RolloutConflict("no rollout is running")
    rollout = (
        Rollout.unscoped_objects.select_for_update(of=("self",))
        .select_related("revision", "stable_revision", "deployment")
        .get(pk=found.pk)
    )
    if rollout.status != Rollout.Status.RUNNING:
        raise RolloutConflict("no rollout is running")
    now = timezone.now()
    current = rollout.deployment
    if action == "pause":
        if not rollout.paused:
            rollout.paused = True
            rollout.save(update_fields=["paused"])
            DeploymentEvent.record(current, "RolloutPaused", f"paused at {rollout.current_weight}%")
    elif action == "resume":
        if rollout.paused:
            rollout.paused, rollout.step_ready_at = False, None  # the step's pause starts over
            rollout.save(update_fields=["paused", "step_ready_at"])
            DeploymentEvent.record(current, "RolloutResumed", f"resumed at {rollout.current_weight}%")
    elif action == "promote":
        rollout.step_index = len(rollout.steps) - 1
        rollout.save(update_fields=["step_index"])
        _set_weight(rollout, current, 100, actor=actor, request_id=request_id)
        _finish(rollout, current, Rollout.Status.SUCCEEDED, "promoted by hand", now)
    elif action == "rollback":
        _rollback(rollout, current, "rolled back by hand", now, actor=actor, request_id=request_id)
    else:
        raise Invalid({"action": [f"unknown action {action!r}"]})
    return rollout
