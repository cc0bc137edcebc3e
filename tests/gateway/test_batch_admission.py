"""Batch lines at the limiter, against real Redis: interactive first, batch in the spare capacity, and batch windows
of their own (the monthly budget shared). The gateway builds these requests from a batch line's snapshot entries
(``Limits.for_batch``, ``DeploymentEntry.batch_capacity``); the end-to-end path is in tests/batches."""

from __future__ import annotations

import dataclasses
from typing import Any

import redis.asyncio as aioredis

from gateway.limits import BATCH_CAPACITY_BUSY, INSUFFICIENT_QUOTA, RATE_LIMIT_EXCEEDED, Limiter, LimitRequest, Limits
from gateway.snapshot_index import DeploymentEntry, RevisionEntry
from tests.gateway.test_limits import limiter_path, request, with_limiter

__all__ = ["limiter_path", "with_limiter"]


def batch_line(capacity: int | None, **kw: Any) -> LimitRequest:
    line = request(**kw)
    return dataclasses.replace(
        line,
        key_limits=line.key_limits.for_batch(),
        tenant_limits=line.tenant_limits.for_batch(),
        batch=True,
        batch_capacity=capacity,
    )


def test_interactive_is_admitted_ahead_of_batch_on_a_saturated_deployment(with_limiter: Any) -> None:
    async def scenario(limiter: Limiter, _: aioredis.Redis) -> None:
        # Two batch lines fill the spare capacity (2); the third waits.
        held = [batch_line(2) for _ in range(2)]
        assert all([(await limiter.admit(line)).allowed for line in held])
        waiting = await limiter.admit(batch_line(2))
        assert (waiting.allowed, waiting.code, waiting.retry_after_s) == (False, BATCH_CAPACITY_BUSY, 1.0)
        assert "Interactive traffic goes first" in waiting.message
        # Interactive requests are not gated: they are admitted on the saturated deployment.
        interactive = [request() for _ in range(3)]
        assert all([(await limiter.admit(r)).allowed for r in interactive])
        # Batch backs off while interactive load holds the deployment: even with both batch lines done.
        for line in held:
            await limiter.settle(line, 10)
        assert not (await limiter.admit(batch_line(2))).allowed
        # The interactive load ends: batch resumes.
        for r in interactive:
            await limiter.settle(r, 10)
        assert (await limiter.admit(batch_line(2))).allowed

    with_limiter(scenario)


def test_batch_windows_are_separate_and_the_budget_is_shared(with_limiter: Any) -> None:
    limits = Limits(requests_per_minute=2, batch_requests_per_minute=3, monthly_token_budget=1000)

    async def scenario(limiter: Limiter, _: aioredis.Redis) -> None:
        interactive = [await limiter.admit(request(key_limits=limits, tenant_limits=limits, est=100)) for _ in range(3)]
        assert [v.allowed for v in interactive] == [True, True, False]
        assert interactive[2].code == RATE_LIMIT_EXCEEDED
        # The interactive window is spent; the batch one is not (and has its own limit).
        batch = [
            await limiter.admit(batch_line(None, key_limits=limits, tenant_limits=limits, est=100)) for _ in range(4)
        ]
        assert [v.allowed for v in batch] == [True, True, True, False]
        assert batch[3].code == RATE_LIMIT_EXCEEDED and "limit 3" in batch[3].message
        # Batch lines did not take interactive places: the interactive window still holds its own two.
        again = await limiter.admit(request(key_limits=limits, tenant_limits=limits, est=100))
        assert not again.allowed and "limit 2" in again.message
        # The monthly budget is one: 5 x 100 reserved of 1000, so a 600-token request of either kind is refused.
        big = await limiter.admit(batch_line(None, tenant_limits=Limits(monthly_token_budget=1000), est=600))
        assert (big.allowed, big.code) == (False, INSUFFICIENT_QUOTA)

    with_limiter(scenario)


def _deployment(ready: int, slots: float | None, share: int) -> DeploymentEntry:
    endpoints = tuple(f"http://127.0.0.1:{9000 + n}" for n in range(ready))
    revision = RevisionEntry(id=1, name="r1", weight=100, endpoints=endpoints)
    return DeploymentEntry(
        id=1, tenant="acme", name="chat", model="m", state="running", max_concurrent=None, timeout_s=30, created=0,
        revisions=(revision,), batch_per_replica=slots, batch_replicas=share,
    )  # fmt: skip


def test_the_batch_capacity_is_the_spare_room_of_ready_replicas_or_of_the_batch_share() -> None:
    assert _deployment(ready=3, slots=5.6, share=2).batch_capacity() == 16  # interactive scaled it up: batch fills it
    assert _deployment(ready=1, slots=5.6, share=2).batch_capacity() == 11  # batch may keep its share busy
    assert _deployment(ready=0, slots=5.6, share=2).batch_capacity() == 11  # and may wake it from zero
    assert _deployment(ready=0, slots=5.6, share=0).batch_capacity() == 0  # no share: never wakes it
    assert _deployment(ready=2, slots=None, share=2).batch_capacity() is None  # no gate published
