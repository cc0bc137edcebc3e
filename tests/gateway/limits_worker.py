"""One "gateway process" for the cross-process exactness tests in test_limits.py.

Usage: ``python limits_worker.py REDIS_URL PREFIX PATH``, PATH being ``redis-py`` or ``redispipe`` (the client the
limiter is given, as ``tests/support/limiter_paths.py`` builds it). It prints ``ready``, then answers commands read
from stdin, one per line, each with one JSON line on stdout:

- ``admit {"key": ..., "tenant": ..., "n": 250, "rpm": 100, "budget": null, "est": 1, "at": <epoch s>}``: fires
  n admits at once (asyncio) at wall-clock time ``at`` and answers ``{"admitted": <count>}``; the admitted
  requests are kept for the next settle.
- ``settle``: settles every kept request with a random actual use between half the estimate and the estimate,
  and answers ``{"actual": <sum of actual tokens>}``.

Two of these started together and sent the same command at the same moment race for the same Redis counters.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import uuid

from gateway.limits import Limiter, LimitRequest, Limits
from tests.support.limiter_paths import close_hot_redis, open_hot_redis, ping_all

CONNECTIONS = 64  # redis-py's pool; RedisPipe always sends everything over one connection


async def main(redis_url: str, prefix: str, path: str) -> None:
    client = open_hot_redis(path, redis_url, max_connections=CONNECTIONS)
    limiter = Limiter(client, prefix)
    await limiter.load_scripts()
    await ping_all(client, CONNECTIONS)  # open the connections now, not during the race
    kept: list[LimitRequest] = []
    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
        command, _, payload = line.partition(" ")
        if command == "admit":
            spec = json.loads(payload)
            requests = [
                LimitRequest(
                    request_id=uuid.uuid4().hex,
                    key_id=spec["key"],
                    key_limits=Limits(requests_per_minute=spec.get("rpm")),
                    tenant=spec["tenant"],
                    tenant_limits=Limits(monthly_token_budget=spec.get("budget")),
                    deployment_id=1,
                    deployment_max_concurrent=None,
                    estimated_tokens=spec.get("est", 1),
                    lease_ttl_s=30.0,
                )
                for _ in range(spec["n"])
            ]
            # both processes start at the same wall-clock moment, so their admits interleave in Redis
            await asyncio.sleep(max(0.0, spec.get("at", 0.0) - time.time()))
            verdicts = await asyncio.gather(*(limiter.admit(r) for r in requests))
            kept = [r for r, v in zip(requests, verdicts, strict=True) if v.allowed]
            print(json.dumps({"admitted": len(kept)}), flush=True)
        elif command == "settle":
            actual = [random.randint(r.estimated_tokens // 2, r.estimated_tokens) for r in kept]
            await asyncio.gather(*(limiter.settle(r, a) for r, a in zip(kept, actual, strict=True)))
            kept = []
            print(json.dumps({"actual": sum(actual)}), flush=True)
    await close_hot_redis(client)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
