"""Replica health checks: ``GET <path>`` answered 200, a few at a time in threads.

For runtimes that expose vLLM's gauges (``vllm`` and the built-in server) a healthy replica is also asked for
``/metrics`` on the same keep-alive connection, once per check, and its ``vllm:num_requests_waiting`` is kept in
``HealthChecker.waiting``: the supervisor publishes the per-deployment sum for the autoscaler
(``<prefix>:queue:<deployment id>``, docs/contracts.md).
"""

from __future__ import annotations

import http.client
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

# Runtimes whose /metrics carries vLLM's queue gauge (the built-in model server uses vLLM's names).
QUEUE_RUNTIMES = frozenset({"vllm", "builtin"})
QUEUE_GAUGE = "vllm:num_requests_waiting"
METRICS_PATH = "/metrics"
MAX_METRICS_BYTES = 1 << 20  # a replica's metrics page is a few KB; never read an unbounded body


@dataclass(frozen=True)
class CheckResult:
    healthy: bool
    waiting: int | None = None  # the replica's queue gauge, when asked for and readable


def parse_waiting(text: str) -> int | None:
    """Sum of every ``vllm:num_requests_waiting`` sample in Prometheus text (vLLM labels it per model/engine)."""
    total: float | None = None
    for line in text.splitlines():
        if not line.startswith(QUEUE_GAUGE):
            continue
        rest = line[len(QUEUE_GAUGE) :]
        if rest.startswith("{"):
            end = rest.find("}")
            if end < 0:
                continue
            rest = rest[end + 1 :]
        elif not rest.startswith(" "):
            continue  # another metric whose name starts the same way
        parts = rest.split()
        try:
            value = float(parts[0])
        except (IndexError, ValueError):
            continue
        total = (total or 0.0) + value
    return None if total is None else max(0, round(total))


def check_replica(host: str, port: int, path: str, scrape_queue: bool = False, timeout_s: float = 1.0) -> CheckResult:
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()  # drain, so the connection can carry the metrics request
        if response.status != 200:
            return CheckResult(False)
        if not scrape_queue:
            return CheckResult(True)
        try:
            conn.request("GET", METRICS_PATH)
            metrics = conn.getresponse()
            body = metrics.read(MAX_METRICS_BYTES)
        except (OSError, http.client.HTTPException):
            return CheckResult(True)  # health answered; a missing gauge only means "no queue figure"
        if metrics.status != 200:
            return CheckResult(True)
        return CheckResult(True, parse_waiting(body.decode("utf-8", "replace")))
    except (OSError, http.client.HTTPException):
        return CheckResult(False)
    finally:
        conn.close()


def is_healthy(host: str, port: int, path: str, timeout_s: float = 1.0) -> bool:
    return check_replica(host, port, path, timeout_s=timeout_s).healthy


class HealthChecker:
    """Checks many replicas concurrently so one slow replica does not delay the others' status."""

    def __init__(self, workers: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="health")
        # replica key -> its latest queue gauge, for the replicas checked last time that reported one
        self.waiting: dict[str, int] = {}

    def check_all(
        self, targets: dict[str, tuple[str, int, str]], scrape_queue: Collection[str] = ()
    ) -> dict[str, bool]:
        """Health of each target; keys in ``scrape_queue`` also have their queue gauge read into ``waiting``."""
        futures = {
            key: self._pool.submit(check_replica, host, port, path, key in scrape_queue)
            for key, (host, port, path) in targets.items()
        }
        results = {key: future.result() for key, future in futures.items()}
        self.waiting = {key: r.waiting for key, r in results.items() if r.healthy and r.waiting is not None}
        return {key: r.healthy for key, r in results.items()}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
