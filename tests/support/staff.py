"""Data for the usage and staff pages: deployments and usage rollups spread over days, keys and deployments."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from deployments.models import ModelDeployment
from quotas.models import UsageRollup
from quotas.reports import today
from tenants.models import ApiKey, Tenant


def make_deployment(tenant: Tenant, name: str, **fields: Any) -> ModelDeployment:
    values: dict[str, Any] = {"runtime": "vllm", "model": "m", "min_replicas": 0, "max_replicas": 1, **fields}
    return ModelDeployment.unscoped_objects.create(tenant=tenant, name=name, **values)


def seed_usage(tenant: Tenant, *, days: int = 10, seed: int = 7) -> list[UsageRollup]:
    """Random rollups for ``tenant`` over the last ``days`` days (two keys, two deployments, some NULL keys)."""
    rng = random.Random(seed + tenant.pk)
    keys = [ApiKey.issue(tenant=tenant, name=f"{tenant.slug}-key-{n}", scopes=["inference"])[0] for n in range(2)]
    deployments = [make_deployment(tenant, f"{tenant.slug}-dep-{n}") for n in range(2)]
    midnight = datetime.combine(today(), datetime.min.time(), tzinfo=UTC)
    rows = []
    for day in range(days):
        for minute in rng.sample(range(24 * 60), 6):
            for key in [*keys, None]:
                deployment = rng.choice(deployments)
                requests = rng.randint(1, 50)
                rows.append(
                    UsageRollup(
                        tenant=tenant,
                        api_key=key,
                        minute=midnight - timedelta(days=day) + timedelta(minutes=minute),
                        deployment_id=deployment.pk,
                        deployment_name=deployment.name,
                        requests=requests,
                        errors=rng.randint(0, requests // 5),
                        prompt_tokens=rng.randint(0, 5000),
                        completion_tokens=rng.randint(0, 5000),
                        latency_ms_sum=requests * rng.randint(10, 500),
                    )
                )
    return UsageRollup.unscoped_objects.bulk_create(rows)
