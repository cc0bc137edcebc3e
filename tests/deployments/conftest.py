"""Fixtures for the deployments tests: tenant quotas with GPUs, a valid payload, deployments made through the
services (``make_deployment``) and a client of this run's Redis (``rds``).

The personas (``alice``, ``bob``, ``vera``, ``charlie``, ``staff``...), ``api(user)`` and ``broker`` come from
``tests/conftest.py`` and its plugins. ``acme`` and ``globex`` are overridden here: below this folder they have GPUs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from deployments import services
from deployments.models import ModelDeployment
from quotas.models import Quota
from tenants.models import Tenant

# Quotas these tests count against (conftest's tenants get the model defaults, which hold no GPUs).
ACME_QUOTA = {"gpus": {"nvidia-h100": 8, "nvidia-l4": 4}, "max_replicas": 8, "max_deployments": 5}
GLOBEX_QUOTA = {"gpus": {"nvidia-h100": 8}, "max_replicas": 8, "max_deployments": 5}


@pytest.fixture
def acme(acme: Tenant) -> Tenant:
    """conftest's ``acme`` (overridden here, requesting itself), with ``ACME_QUOTA``."""
    Quota.objects.for_tenant(acme).update(**ACME_QUOTA)
    return acme


@pytest.fixture
def globex(globex: Tenant) -> Tenant:
    """conftest's ``globex``, with ``GLOBEX_QUOTA``."""
    Quota.objects.for_tenant(globex).update(**GLOBEX_QUOTA)
    return globex


@pytest.fixture
def deployment_payload() -> Callable[..., dict[str, Any]]:
    """A valid create payload; keyword arguments override fields."""

    def make(**overrides: Any) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "name": "chat-small",
            "runtime": "vllm",
            "model": "meta-llama/Llama-3.1-8B",
            "gpu_type": "nvidia-h100",
            "gpu_count": 1,
            "min_replicas": 1,
            "max_replicas": 2,
        }
        payload.update(overrides)
        return payload

    return make


@pytest.fixture
def rds(redis_prefix: str, redis_url: str) -> redis.Redis:
    """A client of this run's Redis database; the test's keys use ``redis_prefix``."""
    return redis.Redis.from_url(redis_url, decode_responses=True)


@pytest.fixture
def make_deployment(db: None) -> Callable[..., ModelDeployment]:
    def make(tenant: Tenant, **fields: Any) -> ModelDeployment:
        data: dict[str, Any] = {
            "name": "chat",
            "runtime": "builtin",
            "model": "frontdoor/sim-chat",
            "min_replicas": 0,
            "max_replicas": 4,
            "target_concurrency": 1,
        }
        data.update(fields)
        return services.create_deployment(tenant, data, actor=None)

    return make
