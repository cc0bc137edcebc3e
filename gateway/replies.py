"""Answers to requests that never reached the limiter (nothing to meter): an error, or /v1/models' list.

Each is counted in the metrics and written to the access log like every request; the limiter's usage event is
only for admitted requests (``gateway.inference``).
"""

from __future__ import annotations

import time

from controlplane.contracts.protocols import OPENAI
from gateway.accesslog import AccessLog
from gateway.asgi import Send, respond
from gateway.errors import GatewayError
from gateway.metrics import GatewayMetrics


class Replies:
    """Renders a ``GatewayError`` in the client's protocol's shape, and records every request answered before
    admission."""

    __slots__ = ("access_log", "metrics")

    def __init__(self, metrics: GatewayMetrics, access_log: AccessLog) -> None:
        self.metrics = metrics
        self.access_log = access_log

    async def error(
        self,
        send: Send,
        rid: str,
        method: str,
        path: str,
        started: float,
        error: GatewayError,
        tenant: str = "",
        deployment: str = "",
        extra: dict[str, str] | None = None,
        protocol: str = OPENAI,
    ) -> None:
        """Answer ``error`` (its headers, plus ``extra``) in ``protocol``'s shape and record the request."""
        headers = {**error.headers, **extra} if extra else error.headers
        await respond(send, error.status, error.render(protocol), rid, headers)
        self.finished(rid, method, path, tenant, deployment, error.status, started)

    def finished(
        self, rid: str, method: str, path: str, tenant: str, deployment: str, status: int, started: float
    ) -> None:
        """Metrics and access log for a request that never reached the limiter."""
        elapsed = time.perf_counter() - started
        self.metrics.observe_request(tenant, deployment, status, elapsed)
        self.access_log.write(rid, method, path, tenant, deployment, status, elapsed * 1000)
