"""Requests held while a deployment starts: the per-process count, and the wake signal to the autoscaler."""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from controlplane.contracts.redis_names import wake_key

WAKE_EVERY_S = 5.0  # per deployment and process: the autoscaler needs one signal, not one per request


class ColdStarts:
    """How many requests this process holds for starting deployments, and their de-duplicated wake signal.

    The count is read and changed by ``gateway.inference`` (a cold deployment) and ``gateway.coldhold`` (one
    refused everywhere) alike, so both respect the one ``queue_max``.
    """

    def __init__(self, redis: aioredis.Redis, prefix: str, channel: str) -> None:
        """``channel``: the installation's wake channel (``controlplane.contracts.redis_names``)."""
        self.redis = redis
        self.prefix = prefix
        self.channel = channel
        self.held = 0
        self._sent: dict[int, float] = {}  # deployment id -> monotonic time of its last signal

    async def signal(self, deployment_id: int) -> None:
        """``SET <prefix>:wake:<id>`` and publish the id, at most every ``WAKE_EVERY_S`` per deployment."""
        now = time.monotonic()
        if now - self._sent.get(deployment_id, -WAKE_EVERY_S) < WAKE_EVERY_S:
            return
        self._sent[deployment_id] = now
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(wake_key(self.prefix, deployment_id), str(time.time()), ex=60)
        pipe.publish(self.channel, str(deployment_id))
        try:
            await pipe.execute()
        except (RedisError, OSError):
            self._sent.pop(deployment_id, None)  # try again on the next round
