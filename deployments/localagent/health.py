"""Replica health checks: ``GET <path>`` answered 200, a few at a time in threads."""

from __future__ import annotations

import http.client
from concurrent.futures import ThreadPoolExecutor


def is_healthy(host: str, port: int, path: str, timeout_s: float = 1.0) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class HealthChecker:
    """Checks many replicas concurrently so one slow replica does not delay the others' status."""

    def __init__(self, workers: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="health")

    def check_all(self, targets: dict[str, tuple[str, int, str]]) -> dict[str, bool]:
        futures = {key: self._pool.submit(is_healthy, host, port, path) for key, (host, port, path) in targets.items()}
        return {key: future.result() for key, future in futures.items()}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
