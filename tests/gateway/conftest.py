"""Fixtures for the gateway tests: one Redis prefix, world, model server and gateway per session.

The helpers they use (``World``, ``start_gateway``, ...) live in ``tests/support/gateway.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.gateway import (
    BASE_PREFIX,
    REDIS_URL,
    Process,
    World,
    clear_prefix,
    start_gateway,
    start_modelserver,
    stop,
)


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture(scope="session")
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    value = f"{BASE_PREFIX}-{uuid.uuid4().hex[:6]}"
    yield value
    clear_prefix(redis_client, value)


@pytest.fixture(scope="session")
def world(redis_client: redis.Redis, prefix: str) -> World:
    w = World(redis_client, prefix)
    w.publish()
    return w


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway")


@pytest.fixture(scope="session")
def upstream(session_tmp: Path) -> Iterator[Process]:
    """A fast model server (no pacing)."""
    proc = start_modelserver(session_tmp)
    yield proc
    stop(proc.proc)


@pytest.fixture(scope="session")
def gateway(session_tmp: Path, prefix: str, world: World) -> Iterator[Process]:
    proc = start_gateway(session_tmp, prefix)
    yield proc
    stop(proc.proc)


@pytest.fixture(scope="session")
def second_gateway(session_tmp: Path, prefix: str, world: World) -> Iterator[Process]:
    proc = start_gateway(session_tmp, prefix)
    yield proc
    stop(proc.proc)
