"""Quota admission for deployments: may this tenant hold one more (or a bigger) deployment?

Called by ``deployments.services`` inside the transaction that writes the deployment. The tenant's quota row is
locked first (``select_for_update``), so two concurrent requests for the same tenant are admitted one after the
other, each seeing the other's committed deployment. Without the lock, two concurrent creates could each see
room for one more deployment and together exceed the quota.

Admission acts for no one of its own: the deployment service that calls it names the actor. A refusal is
``controlplane.domain_errors.QuotaExceeded``, whose message names the quota, the ask and what is left.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import F, Sum

from controlplane.domain_errors import QuotaExceeded
from deployments.models import ModelDeployment, Runtime
from deployments.sizing import SIZING_FIELDS
from quotas.models import Quota
from tenants.models import Tenant


@dataclass(frozen=True)
class Usage:
    """What a tenant's deployments hold now (deployments being deleted do not count)."""

    deployments: int
    replicas: int
    gpus: int  # of one GPU type: sum of gpu_count × max_replicas
    # What every replica's pod requests, at max_replicas: the namespace's ResourceQuota caps both.
    cpu_cores: float = 0.0
    memory_gib: float = 0.0


def pod_footprint(deployment: ModelDeployment) -> tuple[float, float]:
    """CPU cores and GiB of memory one replica's pod requests (none for ``external``: it runs no pods)."""
    if deployment.runtime == Runtime.EXTERNAL:
        return 0.0, 0.0
    sizing = deployment.sizing
    return sizing.cpu_cores, sizing.memory_gib


def lock_quota(tenant: Tenant) -> Quota:
    """Lock and return the tenant's quota row; the caller must be inside ``transaction.atomic()``.

    A tenant without a quota row gets the model defaults; its tenant row is locked instead, so admission is
    still serialised per tenant.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("lock_quota() must run inside transaction.atomic()")
    # Race: two concurrent admissions each reading usage before the other commits; the row lock orders them.
    quota = Quota.objects.for_tenant(tenant).select_for_update().first()
    if quota is None:
        Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
        quota = Quota(tenant=tenant)
    return quota


def current_usage(tenant: Tenant, *, gpu_type: str, excluding: ModelDeployment | None) -> Usage:
    """The tenant's held deployments, replicas and GPUs of ``gpu_type``, leaving out ``excluding``."""
    held = ModelDeployment.objects.for_tenant(tenant).exclude(desired_state=ModelDeployment.DesiredState.DELETING)
    if excluding is not None and excluding.pk is not None:
        held = held.exclude(pk=excluding.pk)
    totals = held.aggregate(replicas=Sum("max_replicas"))
    gpus = 0
    if gpu_type:
        gpu_totals = held.filter(gpu_type=gpu_type).aggregate(gpus=Sum(F("gpu_count") * F("max_replicas")))
        gpus = int(gpu_totals["gpus"] or 0)
    # Sizing defaults depend on the runtime and GPU count, so the sums are taken here (a tenant holds a handful).
    cpu = memory = 0.0
    for deployment in held.only("runtime", "gpu_type", "gpu_count", "max_replicas", *SIZING_FIELDS):
        per_cpu, per_memory = pod_footprint(deployment)
        cpu += per_cpu * deployment.max_replicas
        memory += per_memory * deployment.max_replicas
    return Usage(
        deployments=held.count(),
        replicas=int(totals["replicas"] or 0),
        gpus=gpus,
        cpu_cores=cpu,
        memory_gib=memory,
    )


def admit_deployment(
    tenant: Tenant,
    *,
    gpu_type: str,
    gpu_count: int,
    max_replicas: int,
    cpu_cores: float = 0.0,
    memory_gib: float = 0.0,
    replacing: ModelDeployment | None = None,
) -> Quota:
    """Refuse with ``QuotaExceeded`` unless the tenant's quota has room for this deployment.

    ``cpu_cores`` and ``memory_gib`` are what one replica's pod requests (``pod_footprint``): at ``max_replicas``
    they must fit the quota's CPU and memory, which the namespace's ResourceQuota enforces too (without this check a
    deployment admitted here would leave replicas the cluster never creates).
    ``replacing`` is the deployment being updated or scaled (its current holding is not counted twice; pass
    the row as stored, before the change). A change that does not ask for more of a resource is always
    admitted on that resource, so a tenant over a lowered quota can still scale down.
    Must run inside the caller's ``transaction.atomic()``; the quota row stays locked until it commits.
    """
    quota = lock_quota(tenant)
    gpus_asked = gpu_count * max_replicas if gpu_type and gpu_count else 0
    usage = current_usage(tenant, gpu_type=gpu_type, excluding=replacing)

    if replacing is None and usage.deployments + 1 > quota.max_deployments:
        left = max(quota.max_deployments - usage.deployments, 0)
        raise QuotaExceeded(f"quota exceeded: deployments: asked 1, {left} of {quota.max_deployments} left")

    held_replicas = replacing.max_replicas if replacing is not None else 0
    if max_replicas > held_replicas and usage.replicas + max_replicas > quota.max_replicas:
        left = max(quota.max_replicas - usage.replicas, 0)
        raise QuotaExceeded(f"quota exceeded: replicas: asked {max_replicas}, {left} of {quota.max_replicas} left")

    if gpus_asked:
        held_gpus = 0
        if replacing is not None and replacing.gpu_type == gpu_type:
            held_gpus = replacing.gpu_count * replacing.max_replicas
        allowed = quota.gpus_of(gpu_type)
        if gpus_asked > held_gpus and usage.gpus + gpus_asked > allowed:
            left = max(allowed - usage.gpus, 0)
            raise QuotaExceeded(
                f"quota exceeded: {gpu_type} GPUs: asked {gpus_asked} "
                f"({gpu_count} per replica × {max_replicas} replicas), {left} of {allowed} left"
            )

    held_cpu, held_memory = pod_footprint(replacing) if replacing is not None else (0.0, 0.0)
    for resource, per_replica, held, used, allowed, unit in (
        ("CPU", cpu_cores, held_cpu, usage.cpu_cores, quota.cpu_cores, " cores"),
        ("memory", memory_gib, held_memory, usage.memory_gib, quota.memory_gib, " GiB"),
    ):
        asked, holding = per_replica * max_replicas, held * (replacing.max_replicas if replacing else 0)
        if asked > holding and used + asked > allowed:
            remaining = max(allowed - used, 0.0)
            raise QuotaExceeded(
                f"quota exceeded: {resource}: asked {_n(asked)}{unit} ({_n(per_replica)} per replica × "
                f"{max_replicas} replicas), {_n(remaining)} of {allowed}{unit} left"
            )
    return quota


def _n(value: float) -> str:
    return f"{value:g}"
