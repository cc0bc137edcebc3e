"""Counters and gauges, rendered as Prometheus text at ``/metrics``.

Gauge names follow vLLM (``vllm:num_requests_running``, ``vllm:num_requests_waiting``) so the gateway's
routing and the autoscaler read the built-in server and vLLM the same way.
"""

from __future__ import annotations

import bisect
from collections import Counter

from modelserver.scheduler import SequenceScheduler

TTFT_BUCKETS_S = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Plain in-process counters: the server is one process on one event loop, so no locking is needed."""

    def __init__(self, model_name: str, scheduler: SequenceScheduler) -> None:
        self.model_name = model_name
        self.scheduler = scheduler
        self.requests: Counter[tuple[str, int]] = Counter()  # (endpoint, status) -> count
        self.requested_models: Counter[str] = Counter()  # the `model` each generation request named
        self.cancelled = 0
        self.truncated = 0
        self.injected_errors = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self._ttft_counts = [0] * (len(TTFT_BUCKETS_S) + 1)
        self._ttft_sum = 0.0

    def count_request(self, endpoint: str, status: int) -> None:
        self.requests[(endpoint, status)] += 1

    def observe_ttft(self, seconds: float) -> None:
        self._ttft_counts[bisect.bisect_left(TTFT_BUCKETS_S, seconds)] += 1
        self._ttft_sum += seconds

    def render(self) -> str:
        model = f'model_name="{_escape(self.model_name)}"'
        lines = [
            "# HELP vllm:num_requests_running Requests being generated now.",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{{model}}} {self.scheduler.running}",
            "# HELP vllm:num_requests_waiting Requests queued behind --max-num-seqs.",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{{{model}}} {self.scheduler.waiting}",
            "# HELP vllm:prompt_tokens_total Prompt tokens processed.",
            "# TYPE vllm:prompt_tokens_total counter",
            f"vllm:prompt_tokens_total{{{model}}} {self.prompt_tokens}",
            "# HELP vllm:generation_tokens_total Tokens generated.",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{{{model}}} {self.generation_tokens}",
            "# HELP vllm:time_to_first_token_seconds Time from admission to the first generated token.",
            "# TYPE vllm:time_to_first_token_seconds histogram",
        ]
        cumulative = 0
        for bound, count in zip(TTFT_BUCKETS_S, self._ttft_counts, strict=False):
            cumulative += count
            lines.append(f'vllm:time_to_first_token_seconds_bucket{{{model},le="{bound}"}} {cumulative}')
        cumulative += self._ttft_counts[-1]
        lines += [
            f'vllm:time_to_first_token_seconds_bucket{{{model},le="+Inf"}} {cumulative}',
            f"vllm:time_to_first_token_seconds_sum{{{model}}} {self._ttft_sum}",
            f"vllm:time_to_first_token_seconds_count{{{model}}} {cumulative}",
            "# HELP modelserver_requests_total Inference requests answered, by endpoint and HTTP status.",
            "# TYPE modelserver_requests_total counter",
        ]
        for (endpoint, status), count in sorted(self.requests.items()):
            lines.append(f'modelserver_requests_total{{endpoint="{endpoint}",status="{status}"}} {count}')
        lines += [
            "# HELP modelserver_requests_by_model_total Generation requests received, by the model they named.",
            "# TYPE modelserver_requests_by_model_total counter",
        ]
        for name, count in sorted(self.requested_models.items()):
            lines.append(f'modelserver_requests_by_model_total{{model="{_escape(name)}"}} {count}')
        lines += [
            "# HELP modelserver_requests_cancelled_total Requests abandoned because the client disconnected.",
            "# TYPE modelserver_requests_cancelled_total counter",
            f"modelserver_requests_cancelled_total {self.cancelled}",
            "# HELP modelserver_streams_truncated_total Streams cut on purpose by the truncate_after fault.",
            "# TYPE modelserver_streams_truncated_total counter",
            f"modelserver_streams_truncated_total {self.truncated}",
            "# HELP modelserver_injected_errors_total Requests failed on purpose by the error_rate fault.",
            "# TYPE modelserver_injected_errors_total counter",
            f"modelserver_injected_errors_total {self.injected_errors}",
        ]
        return "\n".join(lines) + "\n"
