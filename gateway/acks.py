"""Acknowledging the snapshot this process routes with, so backends stop a replica only once no gateway uses it.

Each gateway process writes ``HSET <prefix>:gateway:acks <gateway id> {"version", "ts"}`` at once after every
snapshot swap and every second besides, and removes its field on a clean shutdown (``controlplane/contracts/drain.py``
has the rule the backends apply). Nothing is acknowledged before a first snapshot is loaded: until then this process
routes nowhere, so it holds up no drain. One small write per second; never on the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from controlplane.contracts.drain import ACK_INTERVAL_S, encode_ack, new_gateway_id
from controlplane.contracts.redis_names import gateway_acks_key
from gateway.snapshot import SnapshotStore

log = logging.getLogger("frontdoor.gateway.acks")


class SnapshotAcks:
    """This process's acknowledgement of the snapshot version it has loaded."""

    def __init__(self, redis: aioredis.Redis, prefix: str, store: SnapshotStore, interval_s: float = ACK_INTERVAL_S):
        self.redis = redis
        self.key = gateway_acks_key(prefix)
        self.store = store
        self.interval_s = interval_s
        self.gateway_id = new_gateway_id()
        self._swapped = asyncio.Event()

    def on_swap(self, snapshot: Any) -> None:
        """``SnapshotStore.on_change`` callback: acknowledge the new version now, not at the next refresh."""
        self._swapped.set()

    async def ack_forever(self) -> None:
        while True:
            self._swapped.clear()
            if self.store.loaded:
                version = self.store.current.version
                try:
                    await self.redis.hset(self.key, self.gateway_id, encode_ack(version, time.time()))
                except (RedisError, OSError) as exc:
                    log.warning("could not acknowledge snapshot version %s: %s", version, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._swapped.wait(), self.interval_s)

    async def withdraw(self) -> None:
        """Remove this process's field (a clean exit): a backend need not wait for it to time out."""
        try:
            await self.redis.hdel(self.key, self.gateway_id)
        except (RedisError, OSError) as exc:
            log.warning("could not withdraw the snapshot acknowledgement: %s", exc)
