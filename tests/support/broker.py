"""This run's Celery queue in the broker's Redis database, read the way a worker would find it."""

from __future__ import annotations

import base64
import json
from typing import Any

import redis

from tests.support.isolation import celery_key


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
