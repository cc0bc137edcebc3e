"""The autoscale tick against real Redis and Postgres: load raises replicas, idleness lowers them to zero, a held
request wakes a deployment, the tenant's quota caps it, and ``hpa`` deployments are left to Kubernetes."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import redis

from controlplane.contracts.redis_names import wake_key
from deployments.models import DeploymentEvent, ModelDeployment
from deployments.scaling import tick as autoscale
from deployments.tasks import autoscale_tick, tick_lock
from quotas.models import Quota
from tenants.models import Tenant
from tests.support.scaling import add_leases

T0 = 1_800_000_000.0


@pytest.fixture(autouse=True)
def short_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows of a few ticks so a test walks through a whole cycle in a few dozen simulated ticks."""
    monkeypatch.setenv("FRONTDOOR_AUTOSCALE_STABLE_WINDOW_S", "10")
    monkeypatch.setenv("FRONTDOOR_AUTOSCALE_PANIC_WINDOW_S", "4")
    monkeypatch.setenv("FRONTDOOR_SCALE_TO_ZERO_GRACE_S", "8")


def _reconciled(deployment: ModelDeployment) -> ModelDeployment:
    """Stand in for the reconciler: every desired replica becomes ready."""
    deployment.refresh_from_db()
    ModelDeployment.unscoped_objects.filter(pk=deployment.pk).update(ready_replicas=deployment.desired_replicas)
    deployment.refresh_from_db()
    return deployment


def _reasons(deployment: ModelDeployment) -> list[str]:
    return list(DeploymentEvent.unscoped_objects.filter(deployment=deployment).order_by("id").values_list(
        "reason", flat=True))


@pytest.mark.django_db
def test_it_raises_desired_replicas_under_load(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment], rds: redis.Redis,
    django_capture_on_commit_callbacks: Callable[..., object],
) -> None:
    deployment = make_deployment(acme, max_replicas=4, target_concurrency=1)
    add_leases(rds, deployment.pk, 3, int((T0 + 600) * 1000))
    with django_capture_on_commit_callbacks() as callbacks:  # type: ignore[attr-defined]
        result = autoscale.tick(now=T0)
    deployment.refresh_from_db()
    assert deployment.desired_replicas == 4  # ceil(3 / 0.7) = 5, kept within max 4
    assert result.changed == {deployment.pk: (1, 4)}
    assert _reasons(deployment)[-1] == "ScaledUp"
    assert len(callbacks) == 1  # the reconcile, sent once the new count commits


@pytest.mark.django_db
def test_it_lowers_replicas_at_most_by_half_per_tick_and_reaches_zero_when_idle(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment], rds: redis.Redis
) -> None:
    deployment = make_deployment(acme, min_replicas=0, max_replicas=8, target_concurrency=1)
    lease_key_expiry = int((T0 + 20) * 1000)  # the load lasts 20 s
    add_leases(rds, deployment.pk, 5, lease_key_expiry)
    history = []
    now = T0
    for _ in range(40):  # bounded: 80 simulated seconds
        autoscale.tick(now=now)
        deployment = _reconciled(deployment)
        history.append(deployment.desired_replicas)
        if now > T0 + 20 and deployment.desired_replicas == 0:
            break
        now += 2
    assert max(history) >= 5
    assert history[-1] == 0
    for before, after in itertools.pairwise(history):
        if after < before and after > 0:
            assert after >= (before + 1) // 2, history
    reasons = _reasons(deployment)
    assert {"ScaledUp", "ScaledDown", "ScaledToZero"} <= set(reasons)


def idle_ticks_until_zero(deployment: ModelDeployment, ticks: int) -> int | None:
    """Tick an idle deployment every 2 simulated seconds; the first second at which it reached zero, or None."""
    for step in range(ticks):
        autoscale.tick(now=T0 + 2 * step)
        deployment = _reconciled(deployment)
        if deployment.desired_replicas == 0:
            return 2 * step
    return None


@pytest.mark.django_db
def test_a_deployment_keeps_its_last_replica_for_its_own_idle_grace(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment], rds: redis.Redis
) -> None:
    # The platform's grace is 8 s here; a GPU deployment that reloads weights for minutes asks for longer.
    patient = make_deployment(acme, name="patient", min_replicas=0, max_replicas=2, scale_to_zero_grace_s=30)
    default = make_deployment(acme, name="default", min_replicas=0, max_replicas=2)

    patient_zero = idle_ticks_until_zero(patient, 30)  # bounded: 60 simulated seconds
    default.refresh_from_db()

    assert default.desired_replicas == 0
    assert patient_zero is not None and patient_zero >= 30


@pytest.mark.django_db
def test_it_keeps_min_replicas_when_idle(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment], rds: redis.Redis
) -> None:
    deployment = make_deployment(acme, min_replicas=1, max_replicas=3)
    for step in range(15):
        autoscale.tick(now=T0 + 2 * step)
    deployment.refresh_from_db()
    assert deployment.desired_replicas == 1


@pytest.mark.django_db
def test_it_wakes_a_scaled_to_zero_deployment_within_one_tick(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment], rds: redis.Redis, redis_prefix: str
) -> None:
    deployment = make_deployment(acme, min_replicas=0, max_replicas=2)
    ModelDeployment.unscoped_objects.filter(pk=deployment.pk).update(desired_replicas=0, ready_replicas=0)
    autoscale.tick(now=T0)
    deployment.refresh_from_db()
    assert deployment.desired_replicas == 0
    rds.set(wake_key(redis_prefix, deployment.pk), str(T0), ex=60)  # as the gateway does for a held request
    autoscale.tick(now=T0 + 2)
    deployment.refresh_from_db()
    assert deployment.desired_replicas == 1
    assert rds.exists(wake_key(redis_prefix, deployment.pk)) == 0  # consumed: it wakes once
    assert _reasons(deployment)[-1] == "ScaledUp"


@pytest.mark.django_db
def test_it_caps_replicas_at_the_tenant_gpu_quota_and_says_so(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment], rds: redis.Redis
) -> None:
    deployment = make_deployment(acme, gpu_type="nvidia-h100", gpu_count=2, min_replicas=0, max_replicas=4)
    Quota.unscoped_objects.filter(tenant=acme).update(gpus={"nvidia-h100": 4, "nvidia-l4": 4})  # lowered later
    add_leases(rds, deployment.pk, 10, int((T0 + 600) * 1000))
    autoscale.tick(now=T0)
    deployment.refresh_from_db()
    assert deployment.desired_replicas == 2  # 4 GPUs / 2 per replica
    capped = [c for c in deployment.conditions if c["type"] == "CappedByQuota"]
    assert capped and capped[0]["status"] == "True" and "2 replicas" in capped[0]["message"]
    assert "CappedByQuota" in _reasons(deployment)

    Quota.unscoped_objects.filter(tenant=acme).update(gpus={"nvidia-h100": 8})
    autoscale.tick(now=T0 + 2)
    deployment.refresh_from_db()
    assert deployment.desired_replicas == 4
    assert [c["status"] for c in deployment.conditions if c["type"] == "CappedByQuota"] == ["False"]


@pytest.mark.django_db
def test_it_counts_other_deployments_replicas_against_the_quota(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment], rds: redis.Redis
) -> None:
    busy = make_deployment(acme, name="busy", gpu_type="nvidia-h100", gpu_count=2, min_replicas=0, max_replicas=2)
    other = make_deployment(acme, name="other", gpu_type="nvidia-h100", gpu_count=2, min_replicas=0, max_replicas=2)
    Quota.unscoped_objects.filter(tenant=acme).update(gpus={"nvidia-h100": 6})
    ModelDeployment.unscoped_objects.filter(pk=other.pk).update(desired_replicas=2)  # holds 4 of the 6 GPUs
    add_leases(rds, busy.pk, 10, int((T0 + 600) * 1000))
    autoscale.tick(now=T0)
    busy.refresh_from_db()
    assert busy.desired_replicas == 1


@pytest.mark.django_db
def test_it_leaves_hpa_deployments_to_kubernetes(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment], rds: redis.Redis
) -> None:
    deployment = make_deployment(acme, autoscaler_class="hpa", min_replicas=1, max_replicas=4)
    add_leases(rds, deployment.pk, 10, int((T0 + 600) * 1000))
    result = autoscale.tick(now=T0)
    deployment.refresh_from_db()
    assert deployment.desired_replicas == 1
    assert result.deployments == 0


@pytest.mark.django_db
def test_it_drops_its_decision_when_the_api_changed_the_count_meanwhile(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment], rds: redis.Redis
) -> None:
    deployment = make_deployment(acme, max_replicas=4)
    add_leases(rds, deployment.pk, 3, int((T0 + 600) * 1000))
    stale = ModelDeployment.unscoped_objects.get(pk=deployment.pk)
    ModelDeployment.unscoped_objects.filter(pk=deployment.pk).update(desired_replicas=2)  # a concurrent writer
    assert not autoscale._apply(stale, 1, autoscale.Decision(4, True, False, 3, 3, "panic"))
    deployment.refresh_from_db()
    assert deployment.desired_replicas == 2


@pytest.mark.django_db
def test_the_task_skips_while_another_tick_holds_the_lock(acme: Tenant, rds: redis.Redis) -> None:
    with tick_lock("autoscale", 10) as acquired:
        assert acquired
        assert autoscale_tick() is None
    assert autoscale_tick() is not None
