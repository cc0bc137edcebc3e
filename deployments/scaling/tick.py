"""The autoscale tick: feed each ``kpa`` deployment's load to ``autoscaler.decide`` and act on its answer.

Per running deployment of class ``kpa`` (class ``hpa`` belongs to Kubernetes' HorizontalPodAutoscaler; runtime
``external`` runs no replicas):

- concurrency = live leases in the limiter's ``<prefix>:conc:deployment:<id>`` ZSET (docs/contracts.md), plus the
  requests waiting in the replicas' own queues where a backend publishes them (``<prefix>:queue:<id>``, the sum of
  ``vllm:num_requests_waiting``; the local agent writes it from its health checks). A request waiting at a replica is
  then counted twice on purpose: a queue behind the replica's batch limit is saturation, and it pushes the scaler up
  even when ``target_concurrency`` is set above what a replica really runs at once;
- wake = the gateway's ``<prefix>:wake:<id>`` key, consumed (GETDEL) so one held request wakes the deployment once
  and an old signal does not keep an idle deployment from reaching zero;
- ready = ``ModelDeployment.ready_replicas`` (observed by the reconciler);
- quota cap = the replicas the tenant's quota (replica count and GPUs of this type) leaves for this deployment
  once the others' current replicas are counted;
- scaler state (sample history, panic mode) lives in Redis as JSON per deployment, so any worker can run the tick.

A new count is written with a conditional UPDATE (only if ``desired_replicas`` is still what was read), recorded as
an event, and followed by a reconcile. Capping by quota is shown as the ``CappedByQuota`` condition.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from django.db import transaction
from django.db.models import F

from controlplane.contracts.env import env_float
from controlplane.contracts.redis_names import deployment_concurrency_key, replica_queue_key, wake_key
from controlplane.redis import get_redis, redis_key, redis_prefix
from deployments.models import DeploymentEvent, ModelDeployment, Runtime
from deployments.scaling.kpa import (
    PANIC_WINDOW_S,
    SCALE_TO_ZERO_GRACE_S,
    STABLE_WINDOW_S,
    Decision,
    ScalerConfig,
    ScalerState,
    decide,
)
from quotas.models import Quota

logger = logging.getLogger(__name__)

STATE_TTL_S = 3600  # state of a deployment no longer scaled disappears by itself


def scale_to_zero_grace_s() -> float:
    return env_float("FRONTDOOR_SCALE_TO_ZERO_GRACE_S", SCALE_TO_ZERO_GRACE_S)


def stable_window_s() -> float:
    return env_float("FRONTDOOR_AUTOSCALE_STABLE_WINDOW_S", STABLE_WINDOW_S)


def panic_window_s() -> float:
    return env_float("FRONTDOOR_AUTOSCALE_PANIC_WINDOW_S", PANIC_WINDOW_S)


def state_key(deployment_id: int) -> str:
    return redis_key("autoscaler", deployment_id)


@dataclass
class TenantHoldings:
    """Replicas and GPUs (per type) a tenant's deployments hold now, per deployment, to compute quota caps."""

    quota: Quota
    replicas: int = 0
    gpus: dict[str, int] | None = None

    def cap_for(self, deployment: ModelDeployment) -> int:
        own = deployment.desired_replicas
        cap = self.quota.max_replicas - (self.replicas - own)
        if deployment.gpus_per_replica:
            held = (self.gpus or {}).get(deployment.gpu_type, 0) - own * deployment.gpus_per_replica
            cap = min(cap, (self.quota.gpus_of(deployment.gpu_type) - held) // deployment.gpus_per_replica)
        return max(cap, 0)

    def moved(self, deployment: ModelDeployment, old: int, new: int) -> None:
        self.replicas += new - old
        if deployment.gpus_per_replica and self.gpus is not None:
            self.gpus[deployment.gpu_type] = (
                self.gpus.get(deployment.gpu_type, 0) + (new - old) * deployment.gpus_per_replica
            )


def _holdings(tenant_ids: set[int]) -> dict[int, TenantHoldings]:
    quotas = {q.tenant_id: q for q in Quota.unscoped_objects.filter(tenant_id__in=tenant_ids)}
    result = {tid: TenantHoldings(quotas.get(tid) or Quota(tenant_id=tid), 0, {}) for tid in tenant_ids}
    held = (
        ModelDeployment.objects.unscoped()
        .filter(tenant_id__in=tenant_ids)
        .exclude(desired_state=ModelDeployment.DesiredState.DELETING)
        .values_list("tenant_id", "gpu_type", "gpu_count", "desired_replicas")
    )
    for tenant_id, gpu_type, gpu_count, replicas in held:
        holding = result[tenant_id]
        holding.replicas += replicas
        if gpu_type and gpu_count:
            assert holding.gpus is not None
            holding.gpus[gpu_type] = holding.gpus.get(gpu_type, 0) + gpu_count * replicas
    return result


def scaled_deployments() -> list[ModelDeployment]:
    return list(
        ModelDeployment.objects.unscoped()
        .filter(
            desired_state=ModelDeployment.DesiredState.RUNNING,
            autoscaler_class=ModelDeployment.AutoscalerClass.KPA,
        )
        .exclude(runtime=Runtime.EXTERNAL)
        .order_by("pk")
    )


READS = 4  # Redis replies per deployment in the tick's pipeline


def _queue_length(raw: str | bytes | None) -> int:
    """The published replica queue (absent, or not a whole number: no figure)."""
    try:
        return max(0, int(raw)) if raw is not None else 0
    except ValueError:
        return 0


@dataclass(frozen=True)
class TickResult:
    deployments: int
    changed: dict[int, tuple[int, int]]  # deployment id -> (old, new)


def tick(now: float | None = None) -> TickResult:
    """One pass over every ``kpa`` deployment (the ``deployments.autoscale_tick`` task, every 2 s)."""
    now = time.time() if now is None else now
    deployments = scaled_deployments()
    if not deployments:
        return TickResult(0, {})
    client = get_redis()
    pipe = client.pipeline(transaction=False)
    now_ms = int(now * 1000)
    prefix = redis_prefix()
    for deployment in deployments:
        pipe.zcount(deployment_concurrency_key(prefix, deployment.pk), now_ms, "+inf")
        pipe.getdel(wake_key(prefix, deployment.pk))
        pipe.get(state_key(deployment.pk))
        pipe.get(replica_queue_key(prefix, deployment.pk))
    replies = pipe.execute()
    holdings = _holdings({d.tenant_id for d in deployments})
    windows = (stable_window_s(), panic_window_s(), scale_to_zero_grace_s())
    changed: dict[int, tuple[int, int]] = {}
    states: dict[int, str] = {}
    for index, deployment in enumerate(deployments):
        leases, wake, raw_state, waiting = replies[READS * index : READS * index + READS]
        concurrency = int(leases or 0) + _queue_length(waiting)
        state = ScalerState.from_json(json.loads(raw_state) if raw_state else None)
        state.desired = deployment.desired_replicas  # the count in force, whoever set it (the API may have)
        holding = holdings[deployment.tenant_id]
        config = ScalerConfig(
            min_replicas=deployment.min_replicas,
            max_replicas=deployment.max_replicas,
            target_concurrency=deployment.target_concurrency,
            quota_cap=holding.cap_for(deployment),
            stable_window_s=windows[0],
            panic_window_s=windows[1],
            scale_to_zero_grace_s=(
                windows[2] if deployment.scale_to_zero_grace_s is None else deployment.scale_to_zero_grace_s
            ),
        )
        decision = decide(
            state, config, now=now, concurrency=float(concurrency), ready=deployment.ready_replicas,
            wake=wake is not None,
        )
        old = deployment.desired_replicas
        if decision.desired != old and _apply(deployment, old, decision):
            holding.moved(deployment, old, decision.desired)
            changed[deployment.pk] = (old, decision.desired)
        elif decision.desired != old:
            state.desired = old  # lost a race with another writer: start from the stored count next tick
        _show_quota_cap(deployment, decision)
        states[deployment.pk] = json.dumps(state.to_json(), separators=(",", ":"))
    pipe = client.pipeline(transaction=False)
    for deployment_id, value in states.items():
        pipe.set(state_key(deployment_id), value, ex=STATE_TTL_S)
    pipe.execute()
    return TickResult(len(deployments), changed)


def _event_reason(old: int, new: int) -> str:
    if new == 0:
        return "ScaledToZero"
    return "ScaledUp" if new > old else "ScaledDown"


def _apply(deployment: ModelDeployment, old: int, decision: Decision) -> bool:
    """Write the new count if nobody changed it meanwhile; event and reconcile go with it."""
    from deployments.reconcile.enqueue import enqueue_reconcile

    with transaction.atomic():
        # Conditional UPDATE: a concurrent scale from the API (or another tick) wins, and this write is dropped.
        updated = ModelDeployment.unscoped_objects.filter(
            pk=deployment.pk, desired_replicas=old, desired_state=ModelDeployment.DesiredState.RUNNING
        ).update(desired_replicas=decision.desired, generation=F("generation") + 1)
        if not updated:
            return False
        message = (
            f"replicas {old} -> {decision.desired} ({decision.reason}; concurrency {decision.stable_concurrency:.1f}"
            f" over the stable window, {decision.panic_concurrency:.1f} over the panic window)"
        )
        DeploymentEvent.record(deployment, _event_reason(old, decision.desired), message)
        enqueue_reconcile(deployment.pk)
    deployment.desired_replicas = decision.desired
    logger.info("deployment %s: %s", deployment.pk, message)
    return True


def _has_condition(deployment: ModelDeployment, type_: str, status: bool) -> bool:
    wanted = "True" if status else "False"
    return any(c.get("type") == type_ and c.get("status") == wanted for c in deployment.conditions)


def _show_quota_cap(deployment: ModelDeployment, decision: Decision) -> None:
    """Keep the ``CappedByQuota`` condition in step with the decision (written only when it changes)."""
    capped = decision.capped_by_quota
    present = any(c.get("type") == "CappedByQuota" for c in deployment.conditions)
    if _has_condition(deployment, "CappedByQuota", capped) or (not capped and not present):
        return
    with transaction.atomic():
        # Race: the reconciler rewriting conditions at the same moment; the row lock orders the two writers.
        current = ModelDeployment.unscoped_objects.select_for_update().only("conditions", "tenant_id").get(
            pk=deployment.pk
        )
        message = f"the tenant's quota allows {decision.desired} replicas here" if capped else ""
        if current.set_condition("CappedByQuota", capped, "QuotaExhausted" if capped else "WithinQuota", message):
            ModelDeployment.unscoped_objects.filter(pk=deployment.pk).update(conditions=current.conditions)
            if capped:
                DeploymentEvent.record(current, "CappedByQuota", message, warning=True)

