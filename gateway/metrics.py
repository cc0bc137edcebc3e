"""A tiny Prometheus registry: plain dicts keyed by label tuples, and the listener that serves it as text.

prometheus_client costs several microseconds per observation (locks, label lookups); the gateway is
single-threaded per process, so dict increments are enough.

The series name every tenant and deployment, so they are never served on the inference listener: ``MetricsListener``
is a second listener of each gateway process (``FRONTDOOR_GATEWAY_METRICS_HOST``/``_PORT``, loopback by default),
optionally behind a bearer token. Each process serves its own figures: with N workers, worker processes take the
ports ``port .. port + N - 1``, one each, and Prometheus scrapes every one of them (sums across targets are its job).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from bisect import bisect_left
from collections.abc import Callable

from aiohttp import web
from aiohttp.web_request import BaseRequest

log = logging.getLogger("frontdoor.gateway.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    return "{" + ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)) + "}"


class Counter:
    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...]) -> None:
        self.name, self.help, self.label_names = name, help_text, labels
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...], amount: float = 1) -> None:
        self.values[labels] = self.values.get(labels, 0) + amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        lines += [f"{self.name}{_labels(self.label_names, k)} {_num(v)}" for k, v in self.values.items()]
        return lines


class Gauge(Counter):
    kind = "gauge"

    def dec(self, labels: tuple[str, ...], amount: float = 1) -> None:
        self.values[labels] = self.values.get(labels, 0) - amount


class Histogram:
    def __init__(self, name: str, help_text: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> None:
        self.name, self.help, self.label_names, self.buckets = name, help_text, labels, buckets
        # per label set: [count per bucket (non-cumulative, last is +Inf)..., sum]
        self.values: dict[tuple[str, ...], list[float]] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        row = self.values.get(labels)
        if row is None:
            row = self.values[labels] = [0.0] * (len(self.buckets) + 2)
        row[bisect_left(self.buckets, value)] += 1
        row[-1] += value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        names = (*self.label_names, "le")
        for k, row in self.values.items():
            running = 0.0
            for bound, count in zip((*self.buckets, float("inf")), row[:-1], strict=True):
                running += count
                le = "+Inf" if bound == float("inf") else repr(bound)
                lines.append(f"{self.name}_bucket{_labels(names, (*k, le))} {_num(running)}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, k)} {row[-1]!r}")
            lines.append(f"{self.name}_count{_labels(self.label_names, k)} {_num(running)}")
        return lines


def _num(v: float) -> str:
    return str(int(v)) if v == int(v) else repr(v)


class GatewayMetrics:
    """The gateway's series; labels are tenant slug and deployment name ("" before they are known)."""

    def __init__(self) -> None:
        td = ("tenant", "deployment")
        self.requests = Counter("frontdoor_gateway_requests_total", "Requests by final HTTP status.", (*td, "status"))
        self.latency = Histogram(
            "frontdoor_gateway_request_duration_seconds", "Time spent in the gateway.", td, LATENCY_BUCKETS_S
        )
        self.ttft = Histogram(
            "frontdoor_gateway_time_to_first_byte_seconds", "Time to the first upstream byte.", td, LATENCY_BUCKETS_S
        )
        self.tokens = Counter("frontdoor_gateway_tokens_total", "Tokens metered.", (*td, "kind"))
        self.units = Counter(
            "frontdoor_gateway_units_total", "Inferences (v2) and images metered besides tokens.", (*td, "kind")
        )
        self.in_flight = Gauge("frontdoor_gateway_in_flight_requests", "Requests being served now.", td)
        self.upstream_errors = Counter(
            "frontdoor_gateway_upstream_errors_total", "Upstream failures by kind.", (*td, "kind")
        )
        self.rejections = Counter(
            "frontdoor_gateway_limit_rejections_total", "Requests refused by the limiter.", (*td, "code")
        )
        self._all = (
            self.requests,
            self.latency,
            self.ttft,
            self.tokens,
            self.units,
            self.in_flight,
            self.upstream_errors,
            self.rejections,
        )

    def observe_request(self, tenant: str, deployment: str, status: int, latency_s: float) -> None:
        td = (tenant, deployment)
        self.requests.inc((tenant, deployment, str(status)))
        self.latency.observe(td, latency_s)

    def render(self) -> bytes:
        lines: list[str] = []
        for metric in self._all:
            lines += metric.render()
        return ("\n".join(lines) + "\n").encode()


class MetricsListener:
    """``GET /metrics`` on a listener of its own, in the process's event loop (a scrape renders the dicts above).

    ``token``: when not empty, a scrape must send ``Authorization: Bearer <token>`` (compared in constant time);
    anything else is a 401.
    """

    def __init__(self, render: Callable[[], bytes], token: str = "") -> None:
        self.render = render
        # Digests of equal length: compare_digest then takes as long whatever the presented token's length.
        self._token_digest = hashlib.sha256(token.encode()).digest() if token else b""
        self._server: asyncio.AbstractServer | None = None
        self._http: web.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int, workers: int = 1) -> int:
        """Listen on the first free port of ``port .. port + workers - 1``; returns it.

        One port per worker process: uvicorn's workers share the inference socket, but each has its own figures,
        so each needs its own metrics port. The ports are taken without SO_REUSEPORT, so no two processes ever
        share one (a scrape always reaches the same process), and a restarted worker gets the port its
        predecessor left. All of them taken is an error: a process whose figures nobody can scrape must not start.
        """
        last = port + workers - 1
        if last > 65535:
            raise OSError(f"metrics ports {port}..{last}: past 65535")
        self._http = web.Server(self._handle, access_log=None)
        loop = asyncio.get_running_loop()
        errors: list[str] = []
        for candidate in range(port, last + 1):
            try:
                self._server = await loop.create_server(self._http, host, candidate, reuse_port=False)
            except OSError as exc:
                errors.append(f"{candidate}: {exc.strerror or exc}")
                continue
            self.port = candidate
            log.info("metrics on http://%s:%d/metrics", host, candidate)
            return candidate
        raise OSError(f"no free metrics port on {host} among {port}..{last} ({'; '.join(errors)})")

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            if self._http is not None:
                await self._http.shutdown(1.0)
            await self._server.wait_closed()
            self._server = None

    def authorized(self, header: str | None) -> bool:
        if not self._token_digest:
            return True
        if header is None or header[:7].lower() != "bearer ":
            return False
        presented = hashlib.sha256(header[7:].strip().encode()).digest()
        return hmac.compare_digest(presented, self._token_digest)

    async def _handle(self, request: BaseRequest) -> web.StreamResponse:
        if request.path != "/metrics":
            return web.Response(status=404, text="not found\n")
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, text="method not allowed\n", headers={"Allow": "GET, HEAD"})
        if not self.authorized(request.headers.get("Authorization")):
            return web.Response(
                status=401, text="unauthorized\n", headers={"WWW-Authenticate": 'Bearer realm="metrics"'}
            )
        return web.Response(body=self.render(), headers={"Content-Type": CONTENT_TYPE})
