"""The usage sink writes one event per finished request, settles the limiter and drops the in-flight lease, through
either Redis client the gateway runs with: its own ``RedisPipe`` for ``redis://`` URLs, and redis-py for every other
URL (``rediss://``, ``unix://``). One conformance test runs against both: the second on a Redis started here on a unix
socket, the URL form that sends the gateway to redis-py (``gateway.redispipe.supports``)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from controlplane.contracts import usage_events
from controlplane.contracts.redis_names import deployment_concurrency_key, revision_inflight_key, usage_stream_key
from gateway.limits import Limiter, LimitRequest, Limits
from gateway.redispipe import RedisPipe, supports
from gateway.usage import UsageRecord, UsageSink


@pytest.fixture(scope="module")
def unix_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis of this module's own, listening on a unix socket only (no TCP port), without persistence."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not on PATH: no Redis on a unix socket to test the redis-py path against")
    folder = tmp_path_factory.mktemp("unix-redis")
    socket_path = folder / "redis.sock"
    argv = [server, "--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700"]
    argv += ["--save", "", "--appendonly", "no", "--dir", str(folder)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"unix://{socket_path}"
    try:
        _wait_for(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _wait_for(url: str, proc: subprocess.Popen[bytes], deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        assert proc.poll() is None, f"redis-server exited with {proc.returncode}"
        if Path(url.removeprefix("unix://")).exists():
            client = redis.Redis.from_url(url)
            try:
                if client.ping():
                    return
            except redis.RedisError:
                pass
            finally:
                client.close()
        time.sleep(0.05)
    raise AssertionError(f"redis-server did not answer on {url}")


def _request() -> LimitRequest:
    return LimitRequest(
        request_id=uuid.uuid4().hex,
        key_id="k1",
        key_limits=Limits(max_concurrent_requests=1),
        tenant="acme",
        tenant_limits=Limits(tokens_per_minute=10_000),
        deployment_id=9,
        deployment_max_concurrent=None,
        estimated_tokens=100,
        lease_ttl_s=30.0,
    )


async def _finish_one(url: str, prefix: str) -> dict[str, Any]:
    """Admit a request, publish its in-flight lease as the load flush does, finish it; what Redis holds then."""
    client = aioredis.Redis.from_url(url)
    hot: aioredis.Redis | RedisPipe = RedisPipe(url, 2.0) if supports(url) else client  # as ``build_context``
    try:
        limiter = Limiter(hot, prefix)
        await limiter.load_scripts()
        sink = UsageSink(hot, prefix, limiter)
        req = _request()
        assert (await limiter.admit(req)).allowed
        inflight = revision_inflight_key(prefix, 9, 11)
        await client.zadd(inflight, {req.request_id: time.time() + 60})
        record = UsageRecord(
            request_id=req.request_id,
            tenant_id=3,
            key_id=7,
            deployment_id=9,
            revision_id=11,
            status=200,
            prompt_tokens=12,
            completion_tokens=30,
            latency_ms=41.23456,
            ttft_ms=None,
        )
        await sink.finish(req, record)
        entries = await client.xrange(usage_stream_key(prefix))
        return {
            "client": type(hot).__name__,
            "events": [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries],
            "deployment_leases": await client.zcard(deployment_concurrency_key(prefix, 9)),
            "inflight": await client.zcard(inflight),
            "rid": req.request_id,
        }
    finally:
        if isinstance(hot, RedisPipe):
            await hot.aclose()
        await client.aclose()  # type: ignore[attr-defined]  # types-redis predates aclose


@pytest.fixture(params=["tcp", "unix"])
def redis_for_sink(request: pytest.FixtureRequest, redis_url: str) -> Iterator[tuple[str, str]]:
    url = redis_url if request.param == "tcp" else request.getfixturevalue("unix_redis_url")
    prefix = f"fdt-usage-{uuid.uuid4().hex[:8]}"
    yield url, prefix
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)
    client.close()


def test_it_writes_the_event_settles_and_drops_the_lease_through_either_client(
    redis_for_sink: tuple[str, str],
) -> None:
    url, prefix = redis_for_sink
    result = asyncio.run(_finish_one(url, prefix))

    assert result["client"] == ("RedisPipe" if url.startswith("redis://") else "Redis")
    [event] = result["events"]
    assert list(event) == list(usage_events.FIELDS)
    assert float(event.pop(usage_events.TS)) == pytest.approx(time.time(), abs=60)
    assert event == {
        usage_events.RID: result["rid"],
        usage_events.TENANT: "3",
        usage_events.KEY: "7",
        usage_events.DEPLOYMENT: "9",
        usage_events.REVISION: "11",
        usage_events.STATUS: "200",
        usage_events.PROMPT_TOKENS: "12",
        usage_events.COMPLETION_TOKENS: "30",
        usage_events.LATENCY_MS: "41.235",
        usage_events.TTFT_MS: "",
        usage_events.BATCH: "",
        usage_events.INFERENCES: "0",
        usage_events.IMAGES: "0",
    }
    assert result["deployment_leases"] == 0  # settled: the lease is released
    assert result["inflight"] == 0  # the published in-flight lease is removed with the event


def test_a_unix_socket_url_is_left_to_redis_py() -> None:
    assert not supports("unix:///run/redis.sock")
    assert not supports("rediss://127.0.0.1:6380/0")
    assert supports("redis://127.0.0.1:6379/0")
