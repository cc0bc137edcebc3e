"""Shared fixtures: real Redis (own prefix per run), personas and tenants on real Postgres."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_prefix(settings: pytest.FixtureRequest, redis_url: str) -> Iterator[str]:
    """A Redis key prefix unique to this test; its keys are deleted afterwards."""
    base = os.environ.get("FRONTDOOR_REDIS_PREFIX", "fdt")
    prefix = f"{base}-{uuid.uuid4().hex[:8]}"
    settings.FRONTDOOR_REDIS_PREFIX = prefix  # type: ignore[attr-defined]
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(key)
    client.close()
