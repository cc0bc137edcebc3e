"""The limiter against real Redis: every limit admits exactly its limit, settles correct it, leases expire, and two
OS processes racing for the same counters never admit more than the limit.

Every test runs on both of the limiter's paths to Redis (``tests/support/limiter_paths.py``): redis-py, which the
gateway keeps for TLS and unix-socket URLs, and the pipelined ``RedisPipe`` it uses for plain ``redis://``. The
two pack the same scripts' keys and arguments differently (the pipe from cached RESP), so each must pass alone."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from controlplane.contracts import redis_names as names
from gateway.limits import (
    CONCURRENCY_LIMIT_EXCEEDED,
    INSUFFICIENT_QUOTA,
    RATE_LIMIT_EXCEEDED,
    Admission,
    Limiter,
    LimitRequest,
    Limits,
    format_reset,
)
from gateway.redispipe import RedisPipe
from tests.support.limiter_paths import LIMITER_PATHS, close_hot_redis, open_hot_redis

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
UNLIMITED = Limits()


def request(
    *,
    key: str = "k1",
    key_limits: Limits = UNLIMITED,
    tenant: str = "acme",
    tenant_limits: Limits = UNLIMITED,
    deployment: int = 9,
    deployment_max: int | None = None,
    est: int = 100,
    ttl: float = 30.0,
) -> LimitRequest:
    return LimitRequest(
        request_id=uuid.uuid4().hex,
        key_id=key,
        key_limits=key_limits,
        tenant=tenant,
        tenant_limits=tenant_limits,
        deployment_id=deployment,
        deployment_max_concurrent=deployment_max,
        estimated_tokens=est,
        lease_ttl_s=ttl,
    )


@pytest.fixture(params=LIMITER_PATHS)
def limiter_path(request: pytest.FixtureRequest) -> str:
    """The client the limiter is given: ``redis-py`` or ``redispipe``."""
    return str(request.param)


@pytest.fixture
def with_limiter(redis_url: str, redis_prefix: str, limiter_path: str) -> Callable[..., Any]:
    """Runs ``fn(limiter, redis)`` on a fresh event loop: the limiter on ``limiter_path``'s client, ``redis`` a
    redis-py client of its own for looking at the keys (so what a test reads never went through the path tested)."""

    def run(fn: Callable[[Limiter, aioredis.Redis], Awaitable[T]], window_ms: int = 60_000) -> T:
        async def main() -> T:
            hot = open_hot_redis(limiter_path, redis_url)
            client = aioredis.Redis.from_url(redis_url)
            try:
                return await fn(Limiter(hot, redis_prefix, window_ms=window_ms), client)
            finally:
                await close_hot_redis(hot)
                await client.aclose()  # type: ignore[attr-defined]  # types-redis predates aclose

        return asyncio.run(main())

    return run


async def read_int(client: aioredis.Redis, key: str) -> int:
    return int(await client.get(key) or 0)


async def admit_all(limiter: Limiter, requests: list[LimitRequest]) -> list[Admission]:
    return [await limiter.admit(r) for r in requests]


@pytest.mark.parametrize("scope", ["key", "tenant"])
def test_it_admits_exactly_the_requests_per_minute_then_refuses(with_limiter: Any, scope: str) -> None:
    limits = Limits(requests_per_minute=5)
    kw = {"key_limits": limits} if scope == "key" else {"tenant_limits": limits}

    async def scenario(limiter: Limiter, _: aioredis.Redis) -> list[Admission]:
        return await admit_all(limiter, [request(**kw) for _ in range(7)])  # type: ignore[arg-type]

    verdicts = with_limiter(scenario)
    assert [v.allowed for v in verdicts] == [True] * 5 + [False] * 2
    assert [v.headers["x-ratelimit-remaining-requests"] for v in verdicts[:5]] == ["4", "3", "2", "1", "0"]
    refused = verdicts[5]
    assert refused.code == RATE_LIMIT_EXCEEDED
    assert ("API key k1" if scope == "key" else "tenant acme") in refused.message
    assert "requests per minute" in refused.message and "limit 5" in refused.message
    assert refused.retry_after_s is not None and 0 < refused.retry_after_s <= 60
    assert refused.headers["x-ratelimit-limit-requests"] == "5"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-ratelimit-limit-tokens" not in refused.headers


@pytest.mark.parametrize("scope", ["key", "tenant"])
def test_it_admits_exactly_the_tokens_per_minute_then_refuses(with_limiter: Any, scope: str) -> None:
    limits = Limits(tokens_per_minute=1000)
    kw = {"key_limits": limits} if scope == "key" else {"tenant_limits": limits}

    async def scenario(limiter: Limiter, _: aioredis.Redis) -> list[Admission]:
        return await admit_all(limiter, [request(est=300, **kw) for _ in range(4)])  # type: ignore[arg-type]

    verdicts = with_limiter(scenario)
    assert [v.allowed for v in verdicts] == [True, True, True, False]
    assert [v.headers["x-ratelimit-remaining-tokens"] for v in verdicts] == ["700", "400", "100", "100"]
    refused = verdicts[3]
    assert refused.code == RATE_LIMIT_EXCEEDED
    assert "tokens per minute" in refused.message and "limit 1000" in refused.message
    assert "used 900" in refused.message and "requested 300" in refused.message
    assert refused.retry_after_s is not None and 0 < refused.retry_after_s <= 60


def test_it_refuses_everything_under_a_zero_limit(with_limiter: Any) -> None:
    async def scenario(limiter: Limiter, _: aioredis.Redis) -> Admission:
        return await limiter.admit(request(tenant_limits=Limits(requests_per_minute=0)))

    refused = with_limiter(scenario)
    assert not refused.allowed and refused.code == RATE_LIMIT_EXCEEDED
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"


def test_it_refuses_a_request_larger_than_the_tokens_per_minute_without_retry(with_limiter: Any) -> None:
    async def scenario(limiter: Limiter, _: aioredis.Redis) -> Admission:
        return await limiter.admit(request(key_limits=Limits(tokens_per_minute=1000), est=1001))

    refused = with_limiter(scenario)
    assert not refused.allowed and refused.code == RATE_LIMIT_EXCEEDED
    assert refused.retry_after_s is None
    assert "too large" in refused.message


@pytest.mark.parametrize("scope", ["key", "tenant", "deployment"])
def test_it_admits_exactly_the_concurrency_limit_and_settle_releases_it(with_limiter: Any, scope: str) -> None:
    kw: dict[str, Any] = {  # type: ignore[assignment]
        "key": {"key_limits": Limits(max_concurrent_requests=2)},
        "tenant": {"tenant_limits": Limits(max_concurrent_requests=2)},
        "deployment": {"deployment_max": 2},
    }[scope]

    async def scenario(limiter: Limiter, _: aioredis.Redis) -> tuple[list[Admission], Admission]:
        requests = [request(**kw) for _ in range(3)]
        verdicts = await admit_all(limiter, requests)
        await limiter.settle(requests[0], 50)
        return verdicts, await limiter.admit(request(**kw))

    verdicts, after_settle = with_limiter(scenario)
    assert [v.allowed for v in verdicts] == [True, True, False]
    refused = verdicts[2]
    assert refused.code == CONCURRENCY_LIMIT_EXCEEDED
    assert {"key": "API key k1", "tenant": "tenant acme", "deployment": "deployment 9"}[scope] in refused.message
    assert "limit 2" in refused.message
    assert refused.retry_after_s is not None and refused.retry_after_s > 0
    assert after_settle.allowed


def test_it_refuses_past_the_monthly_budget_and_settles_the_reservation(with_limiter: Any, redis_prefix: str) -> None:
    budget = Limits(monthly_token_budget=1000)
    month = datetime.now(UTC).strftime("%Y%m")

    async def scenario(limiter: Limiter, client: aioredis.Redis) -> tuple[list[Admission], int, Admission, int]:
        requests = [request(tenant_limits=budget, est=300) for _ in range(4)]
        verdicts = await admit_all(limiter, requests)
        await limiter.settle(requests[0], 50)  # 300 reserved, 50 used: 250 back
        budget_key = names.budget_key_prefix(redis_prefix, "acme") + month
        used_after_settle = await read_int(client, budget_key)
        again = await limiter.admit(request(tenant_limits=budget, est=300))
        return verdicts, used_after_settle, again, await read_int(client, budget_key)

    verdicts, used_after_settle, again, used_now = with_limiter(scenario)
    assert [v.allowed for v in verdicts] == [True, True, True, False]
    refused = verdicts[3]
    assert refused.code == INSUFFICIENT_QUOTA
    assert refused.retry_after_s is None
    assert "monthly token budget" in refused.message and "tenant acme" in refused.message
    assert "900 of 1000" in refused.message
    assert used_after_settle == 650
    assert again.allowed and used_now == 950


def test_it_settles_the_budget_in_the_month_it_was_reserved(with_limiter: Any, redis_prefix: str) -> None:
    """A request admitted on the last evening of a month and settled after midnight corrects the old month."""
    budget = Limits(monthly_token_budget=10_000)
    req = request(tenant_limits=budget, est=300, ttl=30.0)
    last_month_ms = int(datetime(2025, 10, 31, 23, 59, 50, tzinfo=UTC).timestamp() * 1000)

    async def scenario(limiter: Limiter, client: aioredis.Redis) -> tuple[int, int]:
        assert (await limiter.admit(req)).allowed
        this_month = names.budget_key_prefix(redis_prefix, "acme") + datetime.now(UTC).strftime("%Y%m")
        old_month = names.budget_key_prefix(redis_prefix, "acme") + "202510"
        # Rewrite the admission as if it happened in October: the lease score is admission time + ttl.
        await client.zadd(names.deployment_concurrency_key(redis_prefix, 9), {req.request_id: last_month_ms + 30_000})
        await client.set(old_month, 300, ex=60)
        await client.set(this_month, 0, ex=60)
        await limiter.settle(req, 120)
        return await read_int(client, old_month), await read_int(client, this_month)

    assert with_limiter(scenario) == (120, 0)


def test_it_corrects_the_token_window_to_actual_use(with_limiter: Any, redis_prefix: str) -> None:
    tpm = Limits(tokens_per_minute=1000)

    async def scenario(limiter: Limiter, client: aioredis.Redis) -> tuple[bool, bool, int]:
        first, second = request(key_limits=tpm, est=600), request(key_limits=tpm, est=600)
        assert (await limiter.admit(first)).allowed
        refused_before = not (await limiter.admit(second)).allowed
        await limiter.settle(first, 100)
        admitted_after = (await limiter.admit(second)).allowed
        tokens_key = names.token_total_key(redis_prefix, names.api_key_scope("k1"))
        return refused_before, admitted_after, await read_int(client, tokens_key)

    assert with_limiter(scenario) == (True, True, 700)


def test_it_settles_only_once(with_limiter: Any, redis_prefix: str) -> None:
    limits = Limits(tokens_per_minute=1000, monthly_token_budget=1000)

    async def scenario(limiter: Limiter, client: aioredis.Redis) -> tuple[int, int]:
        req = request(tenant_limits=limits, est=300)
        assert (await limiter.admit(req)).allowed
        await limiter.settle(req, 100)
        await limiter.settle(req, 100)
        month = datetime.now(UTC).strftime("%Y%m")
        return (
            await read_int(client, names.budget_key_prefix(redis_prefix, "acme") + month),
            await read_int(client, names.token_total_key(redis_prefix, names.tenant_scope("acme"))),
        )

    assert with_limiter(scenario) == (100, 100)


def test_it_purges_expired_leases(with_limiter: Any, redis_prefix: str) -> None:
    """A gateway that crashed never settles; its leases expire instead of blocking the key for ever."""

    async def scenario(limiter: Limiter, client: aioredis.Redis) -> tuple[bool, bool, list[bytes]]:
        crashed = request(key_limits=Limits(max_concurrent_requests=1), ttl=0.05)
        assert (await limiter.admit(crashed)).allowed
        blocked = not (await limiter.admit(request(key_limits=Limits(max_concurrent_requests=1)))).allowed
        await asyncio.sleep(0.1)
        later = request(key_limits=Limits(max_concurrent_requests=1))
        admitted = (await limiter.admit(later)).allowed
        return blocked, admitted, await client.zrange(names.deployment_concurrency_key(redis_prefix, 9), 0, -1)

    blocked, admitted, deployment_leases = with_limiter(scenario)
    assert blocked and admitted
    assert len(deployment_leases) == 1  # only the live lease is left in the deployment's in-flight gauge


def test_it_slides_the_window_rather_than_resetting_it(with_limiter: Any) -> None:
    """With a 1 s window: refused right after the limit, admitted again once Retry-After has passed."""
    rpm = Limits(requests_per_minute=2)

    async def scenario(limiter: Limiter, _: aioredis.Redis) -> tuple[list[Admission], Admission]:
        verdicts = await admit_all(limiter, [request(key_limits=rpm) for _ in range(3)])
        assert verdicts[2].retry_after_s is not None
        await asyncio.sleep(verdicts[2].retry_after_s + 0.05)
        return verdicts, await limiter.admit(request(key_limits=rpm))

    verdicts, later = with_limiter(scenario, window_ms=1000)
    assert [v.allowed for v in verdicts] == [True, True, False]
    assert verdicts[2].retry_after_s is not None and verdicts[2].retry_after_s <= 1.0
    assert later.allowed


def test_it_reports_the_tighter_of_key_and_tenant_in_headers(with_limiter: Any) -> None:
    async def scenario(limiter: Limiter, _: aioredis.Redis) -> Admission:
        return await limiter.admit(
            request(
                key_limits=Limits(requests_per_minute=10, tokens_per_minute=500),
                tenant_limits=Limits(requests_per_minute=3, tokens_per_minute=5000),
                est=100,
            )
        )

    headers = with_limiter(scenario).headers
    assert headers["x-ratelimit-limit-requests"] == "3"
    assert headers["x-ratelimit-remaining-requests"] == "2"
    assert headers["x-ratelimit-limit-tokens"] == "500"
    assert headers["x-ratelimit-remaining-tokens"] == "400"
    assert headers["x-ratelimit-reset-requests"].endswith("s")


def test_it_records_nothing_when_one_limit_refuses(with_limiter: Any, redis_prefix: str) -> None:
    limits = Limits(requests_per_minute=10, tokens_per_minute=10_000, max_concurrent_requests=1)

    async def scenario(limiter: Limiter, client: aioredis.Redis) -> tuple[bool, int, int]:
        assert (await limiter.admit(request(key_limits=limits))).allowed
        refused = not (await limiter.admit(request(key_limits=limits))).allowed
        return (
            refused,
            await client.zcard(names.request_window_key(redis_prefix, names.api_key_scope("k1"))),
            await read_int(client, names.token_total_key(redis_prefix, names.api_key_scope("k1"))),
        )

    assert with_limiter(scenario) == (True, 1, 100)


def test_it_keeps_only_the_deployment_gauge_when_nothing_is_limited(with_limiter: Any, redis_prefix: str) -> None:
    async def scenario(limiter: Limiter, client: aioredis.Redis) -> tuple[Admission, list[bytes]]:
        verdict = await limiter.admit(request())
        return verdict, sorted(await client.keys(f"{redis_prefix}:*"))

    verdict, keys = with_limiter(scenario)
    assert verdict.allowed and verdict.headers == {}
    assert keys == [names.deployment_concurrency_key(redis_prefix, 9).encode()]


def test_it_sets_an_expiry_on_every_key(with_limiter: Any, redis_prefix: str) -> None:
    everything = Limits(requests_per_minute=10, tokens_per_minute=10_000, max_concurrent_requests=5)
    tenant = Limits(
        requests_per_minute=10, tokens_per_minute=10_000, max_concurrent_requests=5, monthly_token_budget=100_000
    )

    async def scenario(limiter: Limiter, client: aioredis.Redis) -> dict[bytes, int]:
        reqs = [request(key_limits=everything, tenant_limits=tenant, deployment_max=5) for _ in range(2)]
        await admit_all(limiter, reqs)
        await limiter.settle(reqs[0], 7)
        return {key: await client.pttl(key) for key in await client.keys(f"{redis_prefix}:*")}

    ttls = with_limiter(scenario)
    assert len(ttls) == 10  # rpm x2, tpm x2 and their totals x2, concurrency x3, budget
    assert all(ttl > 0 for ttl in ttls.values()), ttls


def test_it_queues_the_settle_on_a_pipeline(with_limiter: Any, redis_prefix: str) -> None:
    """As the usage sink does: on redis-py the settle is queued on a pipeline, on ``RedisPipe`` its packed command
    leaves in the same write as the next one."""

    async def scenario(limiter: Limiter, client: aioredis.Redis) -> tuple[int, int, int]:
        req = request(key_limits=Limits(max_concurrent_requests=1, tokens_per_minute=1000), est=100)
        assert (await limiter.admit(req)).allowed
        hot, other = limiter.redis, f"{redis_prefix}:other"
        if isinstance(hot, RedisPipe):
            settled, _ = await asyncio.gather(
                hot.execute_packed(limiter.settle_packed(req, 10)), hot.execute("INCR", other)
            )
        else:
            pipe = hot.pipeline(transaction=False)
            limiter.settle_commands(pipe, req, 10)
            pipe.incr(other)
            settled, _ = await pipe.execute()
        assert settled == 1  # the script found the lease it released
        return (
            await client.zcard(names.concurrency_key(redis_prefix, names.api_key_scope("k1"))),
            await client.zcard(names.deployment_concurrency_key(redis_prefix, 9)),
            await read_int(client, names.token_total_key(redis_prefix, names.api_key_scope("k1"))),
        )

    assert with_limiter(scenario) == (0, 0, 10)  # leases released, the reservation corrected to the actual use


def test_it_raises_redis_errors_to_the_caller(limiter_path: str) -> None:
    async def scenario() -> None:
        client = open_hot_redis(limiter_path, "redis://127.0.0.1:1/0", timeout_s=0.5)  # nothing listens there
        try:
            await Limiter(client, "unused").admit(request())
        finally:
            await close_hot_redis(client)

    with pytest.raises(RedisError):
        asyncio.run(scenario())


@pytest.mark.parametrize(
    ("ms", "text"), [(0, "0ms"), (250, "250ms"), (1000, "1s"), (1500, "1.5s"), (60_000, "1m0s"), (360_000, "6m0s")]
)
def test_it_formats_resets_like_openai(ms: int, text: str) -> None:
    assert format_reset(ms) == text


# --- two OS processes racing for the same counters -------------------------------------------------------------


class Workers:
    """Two ``limits_worker.py`` processes, driven in lock step over their stdin."""

    def __init__(self, redis_url: str, prefix: str, path: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        worker = str(Path(__file__).with_name("limits_worker.py"))
        self.procs = [
            subprocess.Popen(
                [sys.executable, worker, redis_url, prefix, path],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
                cwd=REPO,
            )
            for _ in range(2)
        ]
        for proc in self.procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"

    def send(self, command: str) -> list[dict[str, int]]:
        for proc in self.procs:  # written back to back so both fire at (nearly) the same moment
            assert proc.stdin is not None
            proc.stdin.write(command + "\n")
            proc.stdin.flush()
        answers = []
        for proc in self.procs:
            assert proc.stdout is not None
            answers.append(json.loads(proc.stdout.readline()))
        return answers

    def close(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers(redis_url: str, redis_prefix: str, limiter_path: str) -> Any:
    pair = Workers(redis_url, redis_prefix, limiter_path)
    yield pair
    pair.close()


def test_it_admits_exactly_the_limit_across_two_processes(workers: Workers) -> None:
    for trial in range(4):
        key = f"race{trial}"
        spec = {"key": key, "tenant": f"t-{key}", "n": 250, "rpm": 100, "at": time.time() + 0.2}
        answers = workers.send("admit " + json.dumps(spec))
        assert sum(a["admitted"] for a in answers) == 100, (trial, answers)
        workers.send("settle")


def test_it_never_overspends_a_budget_under_concurrency(workers: Workers, redis_url: str, redis_prefix: str) -> None:
    budget, est = 10_000, 300
    spec = {"key": "spender", "tenant": "frugal", "n": 50, "budget": budget, "est": est, "at": time.time() + 0.2}
    admitted = sum(a["admitted"] for a in workers.send("admit " + json.dumps(spec)))
    actual = sum(a["actual"] for a in workers.send("settle"))

    async def recorded() -> int:
        client = aioredis.Redis.from_url(redis_url)
        try:
            month = time.strftime("%Y%m", time.gmtime())
            return await read_int(client, names.budget_key_prefix(redis_prefix, "frugal") + month)
        finally:
            await client.aclose()  # type: ignore[attr-defined]  # types-redis predates aclose

    assert admitted == budget // est  # the reservations alone block the rest of the 100
    assert actual <= budget
    assert asyncio.run(recorded()) == actual
