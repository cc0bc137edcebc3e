"""The reconciler: desired state from Postgres → backend → observed state back to Postgres (levels, not edges).

Level-triggered and idempotent: every pass recomputes the whole desired state (``plan_replicas`` +
``build_deployment_spec``), hands it to the configured backend, and writes observed state back only where it
differs from what is stored, so a pass over a converged deployment writes nothing. A transaction-scoped Postgres
advisory lock per deployment keeps two workers from reconciling the same deployment at once; the lock goes with
the connection, so a worker killed mid-reconcile never leaves it held.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Mod

from controlplane.snapshot.triggers import request_publish
from deployments.backends.base import (
    Backend,
    DeploymentSpec,
    DeploymentStatus,
    PermanentBackendError,
    RevisionSpec,
    SecretValue,
    TenantSpec,
)
from deployments.models import DeploymentEvent, ModelDeployment, Revision, TenantSecret
from deployments.secrets import reveal
from quotas.models import Quota
from tenants.models import Tenant

logger = logging.getLogger(__name__)

# Namespaces the advisory lock keys (two int4 keys: this class id, then the deployment id).
_LOCK_CLASS_DEPLOYMENT = 0x46440001


@dataclass(frozen=True)
class ReconcileResult:
    """What one pass did: ``outcome`` is converged | progressing | degraded | deleted | busy | missing."""

    outcome: str
    db_writes: int = 0
    api_calls: int = 0
    api_writes: int = 0


def plan_replicas(deployment: ModelDeployment, revisions: Sequence[Revision]) -> dict[int, int]:
    """Replicas per revision id; revisions absent from the result are to be pruned.

    The rule (docs/kubernetes.md, "Replica counts"): revisions with weight > 0 share the requested count
    (``desired_replicas`` clamped to [min, max]) in proportion to their weights, largest remainder first. Each of
    them runs at least one replica unless the deployment is scaled to zero, since it takes a share of the traffic;
    that replica is taken from the revision holding the most (while it keeps at least one), so the total equals the
    requested count whenever the count is at least the number of weighted revisions. Only when it is smaller (a
    canary on a one-replica deployment) does the total exceed ``max_replicas``: by one replica per extra weighted
    revision, for as long as the split lasts. A revision whose weight dropped to 0 keeps its current replicas until
    every revision taking traffic has all its planned replicas ready (KServe #5983: never scale the stable revision
    down before the canary is ready), and is pruned after that.
    """
    if deployment.desired_state != ModelDeployment.DesiredState.RUNNING:
        # Stopped: keep the routed revisions' objects at zero replicas, drop the rest.
        return {r.pk: 0 for r in revisions if r.weight > 0}
    total = min(max(deployment.desired_replicas, deployment.min_replicas), deployment.max_replicas)
    weighted = [r for r in revisions if r.weight > 0]
    plan = _share(total, weighted) if weighted and total > 0 else {r.pk: 0 for r in weighted}
    targets_ready = all(r.ready_replicas >= _wanted_ready(r, plan, r.ready_replicas) for r in weighted)
    for r in revisions:
        if r.weight == 0 and not targets_ready and (r.desired_replicas > 0 or r.ready_replicas > 0):
            plan[r.pk] = max(r.desired_replicas, r.ready_replicas)
    return plan


def _share(total: int, weighted: Sequence[Revision]) -> dict[int, int]:
    """``total`` replicas split by weight (largest remainder), then at least one per revision (see plan_replicas)."""
    weight_sum = sum(r.weight for r in weighted)
    exact = {r.pk: total * r.weight / weight_sum for r in weighted}
    plan = {pk: math.floor(share) for pk, share in exact.items()}
    # Largest remainder: hand out what flooring lost, biggest fractions first (ties: newest revision).
    leftovers = sorted(weighted, key=lambda r: (exact[r.pk] - plan[r.pk], r.number), reverse=True)
    for r in leftovers[: total - sum(plan.values())]:
        plan[r.pk] += 1
    for r in sorted(weighted, key=lambda r: (exact[r.pk], r.number)):  # smallest share first
        if plan[r.pk] > 0:
            continue
        donor = max(weighted, key=lambda d: (plan[d.pk], exact[d.pk], d.number))
        if plan[donor.pk] > 1:
            plan[donor.pk] -= 1
        plan[r.pk] = 1
    return plan


def tenant_spec(tenant: Tenant, quota: Quota | None) -> TenantSpec:
    """A tenant's backend view; a tenant without a Quota row gets the Quota defaults."""
    quota = quota or Quota(tenant=tenant)
    gpus = {str(k): int(v) for k, v in sorted((quota.gpus or {}).items())}
    return TenantSpec(
        id=tenant.pk,
        slug=tenant.slug,
        gpus=gpus,
        max_replicas=quota.max_replicas,
        cpu_cores=quota.cpu_cores,
        memory_gib=quota.memory_gib,
        secrets=tenant_secrets(tenant),
    )


def tenant_secrets(tenant: Tenant) -> tuple[SecretValue, ...]:
    """The tenant's secrets, opened, by name (the reconciler is their only reader besides the snapshot publisher)."""
    return tuple(
        SecretValue(
            name=row.name,
            kind=row.kind,
            version=row.version,
            value=reveal(row),
            registry_server=row.registry_server,
            registry_username=row.registry_username,
        )
        for row in TenantSecret.unscoped_objects.filter(tenant=tenant).order_by("name")
    )


def build_deployment_spec(
    deployment: ModelDeployment, revisions: Iterable[Revision], plan: dict[int, int], tenant: TenantSpec
) -> DeploymentSpec:
    """The plain-data desired state the backend applies (no ORM object crosses into a backend)."""
    wanted = tuple(
        RevisionSpec(id=r.pk, number=r.number, spec=dict(r.spec), replicas=plan[r.pk], weight=r.weight)
        for r in sorted(revisions, key=lambda r: r.number)
        if r.pk in plan
    )
    return DeploymentSpec(
        id=deployment.pk,
        tenant=tenant,
        name=deployment.name,
        autoscaler_class=deployment.autoscaler_class,
        min_replicas=deployment.min_replicas,
        max_replicas=deployment.max_replicas,
        target_concurrency=deployment.target_concurrency,
        revisions=wanted,
        created_at=deployment.created_at.timestamp() if deployment.created_at else 0.0,
        request_timeout_s=deployment.timeout_s,
    )


def _quota_of(tenant: Tenant) -> Quota | None:
    return Quota.unscoped_objects.filter(tenant=tenant).first()


def desired_spec(deployment: ModelDeployment, revisions: Sequence[Revision]) -> DeploymentSpec:
    """What the reconciler would apply now (also what the manifests preview renders)."""
    tenant = tenant_spec(deployment.tenant, _quota_of(deployment.tenant))
    return build_deployment_spec(deployment, revisions, plan_replicas(deployment, revisions), tenant)


def _try_lock(deployment_id: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [_LOCK_CLASS_DEPLOYMENT, deployment_id])
        row = cursor.fetchone()
    return bool(row and row[0])


def _request_publish(deployment: ModelDeployment) -> None:
    """Republish the deployment's tenant section of the gateway's snapshot after commit (``QuerySet.update`` fires no
    signals, so ask explicitly)."""
    request_publish(tenant_id=deployment.tenant_id)


def reconcile_deployment(deployment_id: int, backend: Backend) -> ReconcileResult:
    """One level-triggered pass over one deployment. Raises TransientBackendError for the task to retry."""
    with transaction.atomic():
        # The lock names the race: two workers (a redelivered task and a fresh one) applying the same deployment.
        if not _try_lock(deployment_id):
            return ReconcileResult("busy")
        deployment = ModelDeployment.unscoped_objects.select_related("tenant").filter(pk=deployment_id).first()
        if deployment is None:
            return ReconcileResult("missing")
        if deployment.desired_state == ModelDeployment.DesiredState.DELETING:
            return _reconcile_deletion(deployment, backend)
        revisions = list(Revision.unscoped_objects.filter(deployment=deployment).order_by("number"))
        stored = {r.pk: (list(r.endpoints), r.desired_replicas, r.ready_replicas) for r in revisions}
        generation = deployment.generation
        tenant = tenant_spec(deployment.tenant, _quota_of(deployment.tenant))
        try:
            backend.apply_tenant(tenant)
            plan = plan_replicas(deployment, revisions)
            status = backend.apply_deployment(build_deployment_spec(deployment, revisions, plan, tenant))
            calls, api_writes = status.api_calls, status.writes
            # What was just observed may change the plan (the canary became ready: prune the drained stable).
            _absorb_observed(deployment, revisions, status)
            replan = plan_replicas(deployment, revisions)
            if replan != plan:
                plan = replan
                status = backend.apply_deployment(build_deployment_spec(deployment, revisions, plan, tenant))
                calls, api_writes = calls + status.api_calls, api_writes + status.writes
        except PermanentBackendError as exc:
            writes = _write_degraded(deployment, generation, str(exc))
            return ReconcileResult("degraded", db_writes=writes)
        writes, outcome = write_observed(deployment, revisions, stored, plan, status, generation)
        if writes:
            _request_publish(deployment)
        return ReconcileResult(outcome, db_writes=writes, api_calls=calls, api_writes=api_writes)


def _absorb_observed(deployment: ModelDeployment, revisions: Sequence[Revision], status: DeploymentStatus) -> None:
    """Copy observed counts onto the in-memory rows so the plan sees them (nothing is saved here)."""
    for r in revisions:
        if _is_external(r):
            r.ready_replicas, r.desired_replicas = len(deployment.endpoints), 0
            continue
        observed = status.revisions.get(r.pk)
        r.ready_replicas = observed.ready_replicas if observed else 0
        r.desired_replicas = observed.desired_replicas if observed else 0


def _revision_observation(
    deployment: ModelDeployment, revision: Revision, plan: dict[int, int], status: DeploymentStatus
) -> tuple[list[str], int, int, str | None]:
    """(endpoints, desired, ready, waiting-for-capacity message) of one revision as the backend sees it.

    An external revision is served by the deployment's endpoint URLs, whatever a backend reports for it (one that
    tried to run it would report it unschedulable): it is "ready" as configured while it is planned.
    """
    if _is_external(revision):
        if revision.pk not in plan:
            return [], 0, 0, None
        endpoints = [str(url) for url in deployment.endpoints]
        return endpoints, 0, len(endpoints), None
    observed = status.revisions.get(revision.pk)
    if observed is None:
        return [], 0, 0, None
    return list(observed.endpoints), observed.desired_replicas, observed.ready_replicas, observed.waiting_for_capacity


def _is_external(revision: Revision) -> bool:
    return revision.spec.get("runtime") == "external"


def _wanted_ready(revision: Revision, plan: dict[int, int], ready: int) -> int:
    """Ready replicas a routed revision needs: its planned count; an external one, its endpoints while running."""
    if _is_external(revision):
        return max(ready, 1) if plan[revision.pk] > 0 else 0
    return plan[revision.pk]


# The condition types this module writes. Others on the same row (``CappedByQuota`` from the autoscaler,
# ``SLOBreached`` from the SLO evaluation) belong to other writers and are never touched here.
RECONCILER_CONDITIONS = ("Ready", "Progressing", "Degraded", "WaitingForCapacity")

Condition = tuple[str, bool, str, str]  # type, status, reason, message


def write_observed(
    deployment: ModelDeployment,
    revisions: Sequence[Revision],
    stored: dict[int, tuple[list[str], int, int]],
    plan: dict[int, int],
    status: DeploymentStatus,
    generation: int,
) -> tuple[int, str]:
    """Write what the backend observed, field by field, only where it differs; returns (rows written, outcome).

    ``ModelDeployment.ready_replicas`` counts the ready replicas of the routed revisions (weight > 0): the replicas
    whose endpoints the snapshot gives the gateways, surplus ones included while a scale-down takes them out of the
    routing table (the backend stops reporting a replica before it stops it), so the API says 0 only once no
    gateway is given an endpoint. ``desired_replicas`` is the requested count (API, autoscaler) and is never written
    here; the planned count of each revision is ``Revision.desired_replicas``.
    """
    revision_updates: dict[int, dict[str, Any]] = {}
    waiting: list[str] = []
    failures = [
        (f.failure_reason, f"{r.name}: {f.failure_message or f.failure_reason}")
        for r in revisions
        if r.pk in plan and (f := status.revisions.get(r.pk)) is not None and f.failure_reason
    ]
    not_ready: list[str] = []
    surplus: list[str] = []
    routed_ready = 0
    running = deployment.desired_state == ModelDeployment.DesiredState.RUNNING
    for r in revisions:
        endpoints, desired, ready, capacity = _revision_observation(deployment, r, plan, status)
        if capacity:
            waiting.append(f"{r.name}: {capacity}")
        if r.pk in plan and r.weight > 0:
            # A revision with weight but no ready replica keeps the deployment progressing (never "ready"), even
            # though the gateway already routes around it to the revisions that have endpoints.
            wanted = _wanted_ready(r, plan, ready)
            routed_ready += ready if running else 0  # a stopped deployment is refused by the gateways, never routed
            if ready < wanted:
                not_ready.append(f"{r.name}: {ready}/{wanted} ready")
            elif ready > wanted and not _is_external(r):
                # A scale-down the backend has not reported yet: keep looking (follow-ups) until its endpoints go.
                surplus.append(f"{r.name}: {ready - wanted} more replica(s) than planned still routed")
        if stored[r.pk] != (endpoints, desired, ready):
            revision_updates[r.pk] = {"endpoints": endpoints, "desired_replicas": desired, "ready_replicas": ready}
    for r in revisions:
        if (observed := status.revisions.get(r.pk)) is not None and observed.leaving:
            # A scale-down waiting for the gateways to stop routing to the replicas it removes: keep looking.
            surplus.append(f"{r.name}: {observed.leaving} replica(s) leaving the gateways before they stop")
    routed = any(r.weight > 0 for r in revisions)
    draining = any(r.weight == 0 and r.pk in plan for r in revisions)
    ready = running and routed and not not_ready
    owned: list[Condition] = []
    if not running:
        owned += [("Ready", False, "Stopped", "the deployment is stopped"), ("Progressing", False, "Stopped", "")]
    elif not routed:
        owned += [
            ("Ready", False, "NoTraffic", "no revision has a traffic weight above 0"),
            ("Progressing", False, "NoTraffic", ""),
        ]
    else:
        progressing = not ready or draining or bool(surplus)
        message = (
            "waiting for the new revision before scaling down the old one" if draining else "; ".join(surplus)
        )
        owned += [
            ("Ready", ready, "AllReplicasReady" if ready else "ReplicasNotReady", "; ".join(not_ready)),
            ("Progressing", progressing, _progress_reason(progressing, ready, draining), message),
        ]
    if failures and running:
        owned.append(("Degraded", True, failures[0][0], "; ".join(message for _reason, message in failures)))
    else:
        owned.append(("Degraded", False, "AsExpected", ""))
    if waiting:
        owned.append(("WaitingForCapacity", True, "Unschedulable", "; ".join(waiting)))
    else:
        owned.append(("WaitingForCapacity", False, "CapacityAvailable", ""))
    new_status = (
        ModelDeployment.Status.STOPPED if not running
        else ModelDeployment.Status.DEGRADED if failures
        else ModelDeployment.Status.READY if ready
        else ModelDeployment.Status.PROGRESSING
    )
    fields = _changed_fields(
        deployment, status=new_status, ready_replicas=routed_ready, observed_generation=generation
    )
    writes = _save_observed(deployment, owned, fields, revision_updates)
    return writes, "converged" if ready and not surplus else "progressing"


def _progress_reason(progressing: bool, ready: bool, draining: bool) -> str:
    if not progressing:
        return "Converged"
    return "ScalingDown" if ready and not draining else "RollingOut"


def _changed_fields(deployment: ModelDeployment, **values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if getattr(deployment, name) != value}


def _owned_changed(deployment: ModelDeployment, owned: Sequence[Condition]) -> bool:
    """Whether setting ``owned`` changes the conditions read at the start of the pass (checked on a copy).

    Only this module writes these types, and the advisory lock serializes passes, so what was read is current.
    """
    scratch = ModelDeployment(conditions=[dict(c) for c in deployment.conditions])
    return any([scratch.set_condition(*condition) for condition in owned])


def _save_observed(
    deployment: ModelDeployment,
    owned: Sequence[Condition],
    fields: dict[str, Any],
    revision_updates: dict[int, dict[str, Any]] | None = None,
) -> int:
    """Write the revisions' observed fields, the deployment's ``fields`` and its owned conditions where something
    changed; returns the rows written. Nothing changed: no statement at all (no lock, no write).
    """
    revision_updates = revision_updates or {}
    if not revision_updates and not fields and not _owned_changed(deployment, owned):
        return 0
    # Race: the autoscaler (CappedByQuota) and the SLO evaluation (SLOBreached) rewrite `conditions` under this row
    # lock; re-read them under it and replace only the reconciler's own types, so their conditions survive. The
    # deployment row is locked before its revisions, the order the API's changes take too, so the two never deadlock.
    current = ModelDeployment.unscoped_objects.select_for_update().only("conditions").filter(pk=deployment.pk).first()
    if current is None:
        return 0
    for revision_id, values in sorted(revision_updates.items()):
        Revision.unscoped_objects.filter(pk=revision_id).update(**values)
    writes = len(revision_updates)
    before = [dict(c) for c in current.conditions]
    for condition in owned:
        current.set_condition(*condition)
    if current.conditions != before:
        fields["conditions"] = current.conditions
        _record_transitions(deployment, before, current.conditions)
    deployment.conditions = current.conditions
    if not fields:
        return writes
    ModelDeployment.unscoped_objects.filter(pk=deployment.pk).update(**fields)
    for name, value in fields.items():
        setattr(deployment, name, value)
    return writes + 1


def _record_transitions(
    deployment: ModelDeployment, before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> None:
    """Deployment events for the transitions a tenant cares about."""
    old = {c.get("type"): c.get("status") for c in before}
    old_reasons = {c.get("type"): c.get("reason") for c in before}
    for condition in after:
        type_, now = condition.get("type"), condition.get("status")
        degraded_anew = type_ == "Degraded" and now == "True" and old_reasons.get(type_) != condition.get("reason")
        if degraded_anew and condition.get("reason") != "ApplyFailed":  # _write_degraded records that one itself
            # Every new reason is an event (an image pull fixed, then a crash loop), not only the first one.
            DeploymentEvent.record(deployment, str(condition.get("reason")), condition.get("message", ""), warning=True)
            continue
        if old.get(type_) == now:
            continue
        if type_ == "Ready" and now == "True":
            DeploymentEvent.record(deployment, "Ready", "all replicas of the routed revisions are ready")
        elif type_ == "WaitingForCapacity" and now == "True":
            DeploymentEvent.record(deployment, "WaitingForCapacity", condition.get("message", ""), warning=True)


def _write_degraded(deployment: ModelDeployment, generation: int, message: str) -> int:
    owned: list[Condition] = [("Degraded", True, "ApplyFailed", message), ("Ready", False, "ApplyFailed", message)]
    if _owned_changed(deployment, owned):
        DeploymentEvent.record(deployment, "ApplyFailed", message, warning=True)
    fields = _changed_fields(deployment, status=ModelDeployment.Status.DEGRADED, observed_generation=generation)
    written = _save_observed(deployment, owned, fields)
    logger.warning("deployment %s degraded: %s", deployment.pk, message)
    return written


def _reconcile_deletion(deployment: ModelDeployment, backend: Backend) -> ReconcileResult:
    status = backend.delete_deployment(deployment.tenant.slug, deployment.pk, deployment.name)
    if status.exists:
        if deployment.status != ModelDeployment.Status.DELETING:
            ModelDeployment.unscoped_objects.filter(pk=deployment.pk).update(status=ModelDeployment.Status.DELETING)
        return ReconcileResult("progressing", api_calls=status.api_calls, api_writes=status.writes)
    # The deployment row before its revisions (the cascade deletes those first), the order the API locks them in.
    list(ModelDeployment.unscoped_objects.select_for_update().filter(pk=deployment.pk).values_list("pk", flat=True))
    deployment.delete()  # revisions and events cascade
    _request_publish(deployment)
    return ReconcileResult("deleted", db_writes=1, api_calls=status.api_calls, api_writes=status.writes)


def reconcile_tenant(tenant_id: int, backend: Backend) -> bool:
    """Apply a tenant's shared objects (namespace, quota, network policy); False when the tenant is gone."""
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None:
        return False
    backend.apply_tenant(tenant_spec(tenant, _quota_of(tenant)))
    return True


def deployments_needing_reconcile(ready_slice: tuple[int, int] | None = None) -> list[int]:
    """Ids the periodic resync enqueues: unconverged generations, not-ready deployments, pending deletions.

    ``ready_slice=(index, count)`` adds the running deployments already ``ready`` whose id is ``index`` modulo
    ``count`` (``(0, 1)``: all of them). Their state can change without any write on our side: a local replica
    moving port, the local agent dying, a pod crashing. Revisiting one costs its backend reads and writes nothing
    when nothing changed.
    """
    needs = (
        ~Q(generation=F("observed_generation"))
        | Q(desired_state=ModelDeployment.DesiredState.DELETING)
        | (Q(desired_state=ModelDeployment.DesiredState.RUNNING) & ~Q(status=ModelDeployment.Status.READY))
    )
    if ready_slice is not None:
        index, count = ready_slice
        ready = Q(desired_state=ModelDeployment.DesiredState.RUNNING, status=ModelDeployment.Status.READY)
        if count > 1:
            ready &= Q(slot=index % count)
        needs |= ready
    queryset = ModelDeployment.objects.unscoped()
    if ready_slice is not None and ready_slice[1] > 1:
        queryset = queryset.annotate(slot=Mod("pk", ready_slice[1]))
    return list(queryset.filter(needs).order_by("pk").values_list("pk", flat=True))
