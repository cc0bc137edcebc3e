"""Every snapshot test publishes under a Redis prefix of its own."""

from __future__ import annotations

import pytest
import redis

from controlplane.redis import get_redis


@pytest.fixture(autouse=True)
def _own_prefix(redis_prefix: str) -> str:
    """Set the per-test Redis prefix before any fixture saves a row (and so publishes)."""
    return redis_prefix


@pytest.fixture
def r(redis_prefix: str) -> redis.Redis:
    return get_redis()
