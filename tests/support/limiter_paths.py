"""The limiter's two ways to Redis, each built explicitly rather than chosen from the URL.

The gateway hands the limiter its hand-written ``RedisPipe`` for plain ``redis://`` URLs and its redis-py client
for everything else (TLS, unix sockets); the limiter picks its packing by the client it was given. Tests build
both for the same plain URL, so every limiter test can run on both paths against the same Redis.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.redispipe import RedisPipe

REDIS_PY, REDISPIPE = "redis-py", "redispipe"
LIMITER_PATHS = (REDIS_PY, REDISPIPE)

HotRedis = aioredis.Redis | RedisPipe


def open_hot_redis(path: str, url: str, *, timeout_s: float = 5.0, max_connections: int | None = None) -> HotRedis:
    """The client the gateway would give its limiter on ``path``, configured as the gateway configures it.

    ``max_connections`` bounds redis-py's pool, waiting for a free connection rather than opening more (a worker
    firing hundreds of admits at once keeps its sockets few); ``RedisPipe`` always uses one connection.
    """
    if path == REDISPIPE:
        return RedisPipe(url, timeout_s)
    if path != REDIS_PY:
        raise ValueError(f"unknown limiter path {path!r}; one of {LIMITER_PATHS}")
    if max_connections is None:
        return aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
        )
    pool: aioredis.BlockingConnectionPool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    return aioredis.Redis(connection_pool=pool)


async def ping_all(client: HotRedis, connections: int) -> None:
    """Open the client's connections now, so a timed race does not pay for connecting."""
    if isinstance(client, RedisPipe):
        await client.execute("PING")
        return
    await asyncio.gather(*(client.ping() for _ in range(connections)))  # at once: each holds its own connection


async def close_hot_redis(client: HotRedis) -> None:
    await client.aclose()  # type: ignore[union-attr]  # types-redis predates Redis.aclose
