"""Console fixtures: ``console(user)`` is a test client signed in as ``user`` (personas: tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from django.test import Client

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from deployments.models import ModelDeployment
    from tenants.models import Tenant


@pytest.fixture
def console(db: None, redis_prefix: str) -> Callable[[User | None], Client]:
    def make(user: User | None) -> Client:
        client = Client()
        if user is not None:
            client.force_login(user)
        return client

    return make


@pytest.fixture
def make_deployment(db: None) -> Callable[..., ModelDeployment]:
    """``make_deployment(tenant, name, **fields)``: a deployment with its first revision, as the service makes it."""
    from deployments import services

    def make(tenant: Tenant, name: str, **fields: Any) -> ModelDeployment:
        data = {"name": name, "runtime": "builtin", "model": "frontdoor/sim-chat", "min_replicas": 1, "max_replicas": 1}
        return services.create_deployment(tenant, data | fields, actor=None)

    return make
