"""What a quota would do to a tenant's running deployments, before it is saved: the ones the autoscaler caps.

The autoscale tick (``deployments.scaling.tick``) caps every running ``kpa`` deployment at the replicas the tenant's
quota (replica count and GPUs of its type) leaves it once the others' current replicas are counted, below the
deployment's own minimum if need be, and a deployment it scales down leaves that room to the ones after it. The
preview runs the tick's own computation (``TenantHoldings.cap_for`` and ``moved``, deployments in the tick's order)
against a quota that is not saved, so what it lists is what the next tick does.
"""

from __future__ import annotations

from dataclasses import dataclass

from deployments.models import ModelDeployment, Runtime
from deployments.scaling import tick
from quotas.models import Quota


@dataclass(frozen=True)
class CappedDeployment:
    """A deployment the quota would scale down: from ``current`` desired replicas to ``capped``."""

    name: str
    current: int
    capped: int
    min_replicas: int

    @property
    def below_minimum(self) -> bool:
        return self.capped < self.min_replicas


def scaled_deployments_of(tenant_id: int) -> list[ModelDeployment]:
    """The tenant's deployments the tick scales (those of ``tick.scaled_deployments``), in the tick's order."""
    return list(
        ModelDeployment.objects.for_tenant(tenant_id)
        .filter(
            desired_state=ModelDeployment.DesiredState.RUNNING,
            autoscaler_class=ModelDeployment.AutoscalerClass.KPA,
        )
        .exclude(runtime=Runtime.EXTERNAL)
        .order_by("pk")
        .only("tenant_id", "name", "gpu_type", "gpu_count", "min_replicas", "desired_replicas")
    )


def deployments_capped_by(quota: Quota) -> list[CappedDeployment]:
    """The running deployments ``quota`` (saved or not) would scale down, with the replicas each would keep.

    Two queries: what the tenant's deployments hold now, and the deployments the autoscaler scales.
    """
    holding = tick._holdings({quota.tenant_id})[quota.tenant_id]  # the tick's own holdings of the tenant ...
    holding.quota = quota  # ... measured against the quota being edited
    capped: list[CappedDeployment] = []
    for deployment in scaled_deployments_of(quota.tenant_id):
        cap = holding.cap_for(deployment)
        if deployment.desired_replicas > cap:
            capped.append(CappedDeployment(deployment.name, deployment.desired_replicas, cap, deployment.min_replicas))
            holding.moved(deployment, deployment.desired_replicas, cap)
    return capped
