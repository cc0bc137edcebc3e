"""Fixtures for the deployments tests: tenant quotas with GPUs, a valid payload, this run's Celery queue.

The personas (``alice``, ``bob``, ``vera``, ``charlie``, ``staff``...) and ``api(user)`` come from
``tests/conftest.py``. Import these into a test module with ``from tests.deployments_fixtures import *``.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from quotas.models import Quota
from tenants.models import Tenant
from tests.isolation import celery_key

__all__ = ["acme", "broker", "deployment_payload", "globex"]


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


class Broker:
    """This run's Celery default queue in the broker's Redis database, read the way a worker would find it.

    Nothing else consumes that queue (it is named after the run), so what a test finds there, or does not, is what
    the test sent.
    """

    def __init__(self, client: redis.Redis, queue: str) -> None:
        self.client = client
        self.queue = queue

    def key(self, queue: str | None = None) -> str:
        """The Redis list behind ``queue`` (default: the run's default queue), under the run's Celery key prefix."""
        return celery_key(queue or self.queue)

    def clear(self) -> None:
        self.client.delete(self.key())

    def messages(self) -> list[dict[str, Any]]:
        raw = self.client.lrange(self.key(), 0, -1)
        return [json.loads(item) for item in raw]

    def reconcile_ids(self) -> list[int]:
        """Deployment ids of the queued ``deployments.reconcile_deployment`` tasks, oldest first."""
        ids: list[int] = []
        for message in reversed(self.messages()):  # LPUSH: the newest is at the head
            if message["headers"].get("task") != "deployments.reconcile_deployment":
                continue
            args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            ids.extend(args)
        return ids


@pytest.fixture
def broker(settings: Any) -> Iterator[Broker]:
    """This run's queue on the real broker; refuses to run unless the broker is this run's Redis database."""
    from controlplane.celery import app

    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if app.conf.broker_url != redis_url:
        pytest.skip(f"broker {app.conf.broker_url} is not this run's REDIS_URL {redis_url}")
    client = redis.Redis.from_url(redis_url)
    queue = Broker(client, app.conf.task_default_queue)
    queue.clear()
    yield queue
    queue.clear()
    client.close()
