"""One synchronous Redis client per process for the control plane (tasks, publishers), from settings.

Celery's prefork pool forks workers after import, and a connection pool must never cross a fork, so the
cache is keyed by process id as well as URL. Keys are namespaced with ``FRONTDOOR_REDIS_PREFIX``, read now (tests
change the prefix per test): a key another process reads is named by ``controlplane.contracts.redis_names`` given
``redis_prefix()`` (``deployment_concurrency_key(redis_prefix(), pk)``); a key only the control plane uses by
``redis_key()``; a pub/sub channel (which also carries the database number: pub/sub ignores databases) by
``redis_channel()``.
"""

from __future__ import annotations

import os
import threading

import redis
from django.conf import settings

from controlplane.contracts.redis_names import channel

_lock = threading.Lock()
_clients: dict[tuple[int, str], redis.Redis] = {}


def get_redis() -> redis.Redis:
    """The process's client for ``settings.REDIS_URL`` (responses decoded to ``str``)."""
    url = settings.REDIS_URL
    cache_key = (os.getpid(), url)
    client = _clients.get(cache_key)
    if client is not None:
        return client
    with _lock:
        client = _clients.get(cache_key)
        if client is None:
            # Drop clients inherited from a parent process: their sockets belong to the parent.
            for stale in [k for k in _clients if k[0] != cache_key[0]]:
                del _clients[stale]
            client = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_connect_timeout=2.0,
                socket_timeout=10.0,
                health_check_interval=30,
            )
            _clients[cache_key] = client
        return client


def redis_prefix() -> str:
    """This installation's key prefix, read now: the first argument of every ``redis_names`` function."""
    return str(settings.FRONTDOOR_REDIS_PREFIX)


def redis_key(*parts: object) -> str:
    """``<prefix>:<part>:<part>...`` with the prefix read now, for keys no other process reads."""
    return ":".join([redis_prefix(), *(str(p) for p in parts)])


def redis_channel(name: str) -> str:
    """The pub/sub channel ``name`` (``controlplane.contracts.redis_names``) of this installation, read now."""
    return channel(redis_prefix(), settings.REDIS_URL, name)
