"""Replica health checks: ``GET <path>`` answered 200, a few at a time in threads.

For runtimes that expose vLLM's gauges (``vllm`` and the built-in server) a healthy replica is also asked for
``/metrics`` on the same keep-alive connection, once per check, and its ``vllm:num_requests_waiting`` is kept in
``HealthChecker.waiting``: the supervisor publishes the per-deployment sum for the autoscaler
(``<prefix>:queue:<deployment id>``, docs/contracts.md). Running plus waiting is the replica's in-flight count
(``HealthChecker.in_flight``): a draining replica is stopped once it reaches 0.
"""

from __future__ import annotations

import http.client
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

# Runtimes whose /metrics carries vLLM's queue gauge (the built-in model server uses vLLM's names).
QUEUE_RUNTIMES = frozenset({"vllm", "builtin"})
QUEUE_GAUGE = "vllm:num_requests_waiting"
RUNNING_GAUGE = "vllm:num_requests_running"
METRICS_PATH = "/metrics"
MAX_METRICS_BYTES = 1 << 20  # a replica's metrics page is a few KB; never read an unbounded body


@dataclass(frozen=True)
class CheckResult:
    healthy: bool
    waiting: int | None = None  # the replica's queue gauge, when asked for and readable
    running: int | None = None  # requests it is serving now, likewise

    @property
    def in_flight(self) -> int | None:
        """Requests the replica holds (running + waiting); None when it does not report both gauges."""
        if self.waiting is None or self.running is None:
            return None
        return self.waiting + self.running


def parse_waiting(text: str) -> int | None:
    """Sum of every ``vllm:num_requests_waiting`` sample in Prometheus text (vLLM labels it per model/engine)."""
    return parse_gauge(text, QUEUE_GAUGE)


def parse_gauge(text: str, gauge: str) -> int | None:
    """Sum of every sample of ``gauge`` in Prometheus text; None when it has none."""
    total: float | None = None
    for line in text.splitlines():
        if not line.startswith(gauge):
            continue
        rest = line[len(gauge) :]
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
        text = body.decode("utf-8", "replace")
        return CheckResult(True, parse_waiting(text), parse_gauge(text, RUNNING_GAUGE))
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
        # replica key -> running + waiting, likewise (what a draining replica still has to finish)
        self.in_flight: dict[str, int] = {}

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
        self.in_flight = {key: n for key, r in results.items() if r.healthy and (n := r.in_flight) is not None}
        return {key: r.healthy for key, r in results.items()}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
