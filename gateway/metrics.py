"""A tiny Prometheus registry: plain dicts keyed by label tuples, rendered as text on /metrics.

prometheus_client costs several microseconds per observation (locks, label lookups); the gateway is
single-threaded per process, so dict increments are enough.
"""

from __future__ import annotations

from bisect import bisect_left

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
