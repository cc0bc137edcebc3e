"""Metering: one usage event per admitted request, sent with the limiter settle in one round trip.

Through the gateway's ``RedisPipe`` the settle, the XADD and (when the request's in-flight lease was published)
the ZREM are queued as three commands that leave with every other request's commands of the same loop tick.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from controlplane.contracts import usage_events
from controlplane.contracts.redis_names import revision_inflight_key, usage_stream_key
from gateway.limits import Limiter, LimitRequest
from gateway.redispipe import RedisPipe

log = logging.getLogger("frontdoor.gateway.usage")


@dataclass(slots=True)
class UsageRecord:
    """What a finished request reports (docs/contracts.md "Usage events")."""

    request_id: str
    tenant_id: int
    key_id: int
    deployment_id: int
    revision_id: int | None
    status: int
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    ttft_ms: float | None
    batch_id: str = ""  # the batch a line belongs to; empty for interactive requests
    inferences: int = 0  # v2: the inferences a success answered
    images: int = 0  # image generation: the images a success answered

    def flat_fields(self) -> tuple[str | int | float, ...]:
        """The event as XADD arguments (name, value, ...), stamped with the time now."""
        return usage_events.encode_event(
            request_id=self.request_id,
            ts=time.time(),
            tenant_id=self.tenant_id,
            key_id=self.key_id,
            deployment_id=self.deployment_id,
            revision_id=self.revision_id,
            status=self.status,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            latency_ms=self.latency_ms,
            ttft_ms=self.ttft_ms,
            batch_id=self.batch_id,
            inferences=self.inferences,
            images=self.images,
        )

    def fields(self) -> dict[str, str | int | float]:
        """``flat_fields()`` as the mapping redis-py's ``xadd`` takes."""
        return usage_events.as_mapping(self.flat_fields())


class UsageSink:
    def __init__(self, redis: aioredis.Redis | RedisPipe, prefix: str, limiter: Limiter) -> None:
        self.redis = redis
        self.limiter = limiter
        self.prefix = prefix
        self.stream = usage_stream_key(prefix)

    async def finish(
        self, limit_request: LimitRequest | None, record: UsageRecord, lease_published: bool = True
    ) -> None:
        """Settle the limiter (when it admitted the request) and XADD the usage event, in one round trip.

        ``lease_published=False`` (``LoadFigures.forget`` said the in-flight lease never reached Redis) skips the
        ZREM. Never raises: a lost settle is repaired by lease expiry, and the request has already been answered.
        """
        if isinstance(self.redis, RedisPipe):
            await self._finish_pipelined(self.redis, limit_request, record, lease_published)
            return
        pipe = self.redis.pipeline(transaction=False)
        if limit_request is not None:
            self.limiter.settle_commands(pipe, limit_request, record.prompt_tokens + record.completion_tokens)
        pipe.xadd(self.stream, record.fields())  # type: ignore[arg-type]
        if record.revision_id is not None and lease_published:
            pipe.zrem(revision_inflight_key(self.prefix, record.deployment_id, record.revision_id), record.request_id)
        try:
            await pipe.execute()
        except NoScriptError:
            # Redis lost its scripts (restart/flush); the XADD went through, settle on its own (idempotent).
            try:
                if limit_request is not None:
                    await self.limiter.settle(limit_request, record.prompt_tokens + record.completion_tokens)
            except (RedisError, OSError) as exc:
                log.warning("settle for %s not recorded: %s", record.request_id, exc)
        except (RedisError, OSError) as exc:
            log.warning("usage/settle for %s not recorded: %s", record.request_id, exc)

    async def _finish_pipelined(
        self, redis: RedisPipe, limit_request: LimitRequest | None, record: UsageRecord, lease_published: bool
    ) -> None:
        actual = record.prompt_tokens + record.completion_tokens
        settle = (
            None if limit_request is None else redis.execute_packed(self.limiter.settle_packed(limit_request, actual))
        )
        xadd = redis.execute("XADD", self.stream, "*", *record.flat_fields())
        zrem = None
        if record.revision_id is not None and lease_published:
            key = revision_inflight_key(self.prefix, record.deployment_id, record.revision_id)
            zrem = redis.execute("ZREM", key, record.request_id)
        # Every future is awaited so none keeps an unread exception; they resolve in this order anyway.
        if settle is not None:
            assert limit_request is not None
            try:
                await settle
            except NoScriptError:  # Redis lost its scripts (restart/flush): load them and settle again (idempotent)
                try:
                    await self.limiter.settle(limit_request, actual)
                except (RedisError, OSError) as exc:
                    log.warning("settle for %s not recorded: %s", record.request_id, exc)
            except (RedisError, OSError) as exc:
                log.warning("settle for %s not recorded: %s", record.request_id, exc)
        try:
            await xadd
        except (RedisError, OSError) as exc:
            log.warning("usage event for %s not recorded: %s", record.request_id, exc)
        if zrem is not None:
            try:
                await zrem
            except (RedisError, OSError) as exc:
                log.debug("in-flight lease of %s not removed (it expires): %s", record.request_id, exc)
