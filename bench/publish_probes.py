"""What ``bench/publish_side.py`` measures with: timers, an event-loop stall meter, a gateway store kept current in a
thread, and a real gateway process of the measured tree.

Loaded by path from ``bench/publish_side.py`` (``bench`` on the path is the measured tree's package); everything it
imports of the project (``gateway.snapshot``, ``bench.common``) is the tree's, imported where it is used.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return (time.perf_counter() - started) * 1000, value


def best_of(n: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    runs = [timed(fn) for _ in range(n)]
    return min(ms for ms, _ in runs), runs[-1][1]


class StallMeter:
    """A coroutine that sleeps 1 ms at a time and keeps the largest gap between its wake-ups: how long the event
    loop was blocked (a gateway serves nothing meanwhile)."""

    def __init__(self) -> None:
        self.max_gap_ms = 0.0
        self._running = True

    async def run(self) -> None:
        last = time.perf_counter()
        while self._running:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.max_gap_ms = max(self.max_gap_ms, (now - last) * 1000)
            last = now

    @contextmanager
    def stopping(self) -> Iterator[None]:
        try:
            yield
        finally:
            self._running = False


async def timed_reload(store: Any) -> tuple[float, float]:
    """One ``reload()`` with a stall meter running: (its time, the longest stall), in ms."""
    meter = StallMeter()
    ticker = asyncio.create_task(meter.run())
    await asyncio.sleep(0.005)  # the ticker is running before the load starts
    with meter.stopping():
        started = time.perf_counter()
        await store.reload()
        elapsed = (time.perf_counter() - started) * 1000
    await ticker
    return elapsed, meter.max_gap_ms


class BackgroundGateway:
    """A gateway's ``SnapshotStore`` kept current by ``listen_forever`` and ``poll_version_forever`` in a thread of its
    own, with its own event loop, as a gateway process runs it."""

    def __init__(self, prefix: str, channel: str) -> None:
        self.prefix, self.channel = prefix, channel
        self.store: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> BackgroundGateway:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the background gateway did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _main(self) -> None:
        import redis.asyncio as aioredis

        from gateway.snapshot import SnapshotStore

        client = aioredis.Redis.from_url(REDIS_URL)
        self.store = SnapshotStore(client, self.prefix, self.channel)
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        tasks = [
            asyncio.create_task(self.store.listen_forever()),
            asyncio.create_task(self.store.poll_version_forever()),
        ]
        self._ready.set()
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        # Bounded: a cancellation that lands inside the Redis client's read may take a while to surface.
        await asyncio.wait(tasks, timeout=2)
        await client.aclose()  # type: ignore[attr-defined]

    def wait_for(self, done: Callable[[Any], bool], timeout_s: float, interval_s: float = 0.002) -> float | None:
        """Seconds until ``done(current snapshot)``; None after ``timeout_s``."""
        started = time.perf_counter()
        while time.perf_counter() - started < timeout_s:
            if done(self.store.current):
                return time.perf_counter() - started
            time.sleep(interval_s)
        return None


class GatewayProcess:
    """A real gateway process of the side's tree (``python -m gateway``), as clients see it: the revocation delay is
    measured here, so that the committing threads' work in this process cannot slow the gateway down."""

    def __init__(self, tree: Path, log_path: Path) -> None:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.tree, self.log_path = tree, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> GatewayProcess:
        from django.conf import settings

        env = {**os.environ, "FRONTDOOR_KEY_PEPPER": settings.FRONTDOOR_KEY_PEPPER, "LOG_LEVEL": "WARNING"}
        command = [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(command, cwd=self.tree, env=env, stdout=out, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def status(self, full_key: str) -> int:
        """A completion for a model nobody has: 404 while the key is good (auth comes first), 401 once revoked."""
        import http.client

        body = json.dumps({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", "/v1/chat/completions", body, {"authorization": f"Bearer {full_key}"})
            return conn.getresponse().status
        except OSError:
            return 0
        finally:
            conn.close()

    def wait_status(self, full_key: str, code: int, timeout_s: float, interval_s: float = 0.01) -> float | None:
        """Seconds until a request with ``full_key`` is answered ``code``; None after ``timeout_s``."""
        started = time.perf_counter()
        while time.perf_counter() - started < timeout_s:
            if self.status(full_key) == code:
                return time.perf_counter() - started
            time.sleep(interval_s)
        return None


def percentile_of(sorted_values: list[float], q: float) -> float:
    from bench.common import percentile

    return percentile(sorted_values, q)
