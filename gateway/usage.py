"""Metering: one usage event per admitted request, sent with the limiter settle in one round trip."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from gateway.limits import Limiter, LimitRequest

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

    def fields(self) -> dict[str, str | int | float]:
        return {
            "rid": self.request_id,
            "ts": time.time(),
            "tenant": self.tenant_id,
            "key": self.key_id,
            "deployment": self.deployment_id,
            "revision": "" if self.revision_id is None else self.revision_id,
            "status": self.status,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_ms": round(self.latency_ms, 3),
            "ttft_ms": "" if self.ttft_ms is None else round(self.ttft_ms, 3),
        }


class UsageSink:
    def __init__(self, redis: aioredis.Redis, prefix: str, limiter: Limiter) -> None:
        self.redis = redis
        self.limiter = limiter
        self.stream = f"{prefix}:usage"
        self.inflight_prefix = f"{prefix}:inflight:"

    async def finish(self, limit_request: LimitRequest | None, record: UsageRecord) -> None:
        """Settle the limiter (when it admitted the request) and XADD the usage event, in one round trip.

        Never raises: a lost settle is repaired by lease expiry, and the request has already been answered.
        """
        pipe = self.redis.pipeline(transaction=False)
        if limit_request is not None:
            self.limiter.settle_commands(pipe, limit_request, record.prompt_tokens + record.completion_tokens)
        pipe.xadd(self.stream, record.fields())  # type: ignore[arg-type]
        if record.revision_id is not None:
            pipe.zrem(f"{self.inflight_prefix}{record.deployment_id}:{record.revision_id}", record.request_id)
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
