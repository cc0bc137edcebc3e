"""Personas, tenants and the Celery broker queue for the deployments tests.

``alice`` owns tenant ``acme``, ``bob`` is a member, ``vera`` a viewer, ``adam`` an admin; ``charlie`` owns
``globex`` and must see nothing of acme; ``staff`` is platform staff. ``api(user)`` is a signed-in API client.
Import the fixtures you use into the test module (``from tests.deployments_fixtures import *``).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from quotas.models import Quota
from tenants.models import Membership, Role, Tenant

BROKER_QUEUE = "celery"  # Celery's default queue: a Redis list of that name in the broker's database

__all__ = [
    "acme",
    "adam",
    "alice",
    "api",
    "bob",
    "broker",
    "charlie",
    "deployment_payload",
    "globex",
    "staff",
    "vera",
]


def _user(username: str, **extra: Any) -> User:
    return User.objects.create_user(username=username, password="pw-" + username, **extra)


@pytest.fixture
def acme(db: None) -> Tenant:
    tenant = Tenant.objects.create(slug="acme", name="Acme")
    Quota.unscoped_objects.create(
        tenant=tenant, gpus={"nvidia-h100": 8, "nvidia-l4": 4}, max_replicas=8, max_deployments=5
    )
    return tenant


@pytest.fixture
def globex(db: None) -> Tenant:
    tenant = Tenant.objects.create(slug="globex", name="Globex")
    Quota.unscoped_objects.create(tenant=tenant, gpus={"nvidia-h100": 8}, max_replicas=8, max_deployments=5)
    return tenant


def _member(tenant: Tenant, username: str, role: str) -> User:
    user = _user(username)
    Membership.unscoped_objects.create(tenant=tenant, user=user, role=role)
    return user


@pytest.fixture
def alice(acme: Tenant) -> User:
    return _member(acme, "alice", Role.OWNER)


@pytest.fixture
def adam(acme: Tenant) -> User:
    return _member(acme, "adam", Role.ADMIN)


@pytest.fixture
def bob(acme: Tenant) -> User:
    return _member(acme, "bob", Role.MEMBER)


@pytest.fixture
def vera(acme: Tenant) -> User:
    return _member(acme, "vera", Role.VIEWER)


@pytest.fixture
def charlie(globex: Tenant) -> User:
    return _member(globex, "charlie", Role.OWNER)


@pytest.fixture
def staff(db: None) -> User:
    return _user("staff", is_staff=True)


@pytest.fixture
def api() -> Callable[[User | None], APIClient]:
    """``api(user)``: an API client signed in as ``user`` (a real session); ``api(None)`` is anonymous."""

    def make(user: User | None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_login(user)
        return client

    return make


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
    """The Celery queue in this run's Redis database, read the way a worker would find it."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def clear(self) -> None:
        self.client.delete(BROKER_QUEUE)

    def messages(self) -> list[dict[str, Any]]:
        raw = self.client.lrange(BROKER_QUEUE, 0, -1)
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
    """The real broker queue; refuses to run unless the broker is this run's own Redis database."""
    from controlplane.celery import app

    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if app.conf.broker_url != redis_url:
        pytest.skip(f"broker {app.conf.broker_url} is not this run's REDIS_URL {redis_url}")
    client = redis.Redis.from_url(redis_url)
    queue = Broker(client)
    queue.clear()
    yield queue
    queue.clear()
    client.close()
