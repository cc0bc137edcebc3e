"""One synchronous Redis client per process for the control plane (tasks, publishers), from settings.

Celery's prefork pool forks workers after import, and a connection pool must never cross a fork, so the
cache is keyed by process id as well as URL. Keys are namespaced with ``FRONTDOOR_REDIS_PREFIX``; use
``redis_key()`` rather than formatting the prefix by hand (tests change the prefix per test), and
``redis_channel()`` for pub/sub channels (which also carry the database number: pub/sub ignores databases).
"""

from __future__ import annotations

import os
import threading

import redis
from django.conf import settings

from controlplane.contracts.channels import channel

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


def redis_key(*parts: object) -> str:
    """``<prefix>:<part>:<part>...`` with the prefix read now (docs/contracts.md)."""
    return ":".join([settings.FRONTDOOR_REDIS_PREFIX, *(str(p) for p in parts)])


def redis_channel(name: str) -> str:
    """The pub/sub channel ``name`` (``controlplane.contracts.channels``) of this installation, read now."""
    return channel(settings.FRONTDOOR_REDIS_PREFIX, settings.REDIS_URL, name)
