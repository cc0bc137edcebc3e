"""What each runtime exports about its load, and how the cluster's metrics pipeline serves it to the HPA.

The model servers count their in-flight requests in Prometheus gauges of their own (vLLM's
``vllm:num_requests_running`` and ``vllm:num_requests_waiting``, which the built-in server copies; TGI's batch and queue
sizes; Triton's pending requests). Two things read them: the ``preStop`` drain (``drain_hook.py``), which polls them
on the pod itself, and class ``hpa``, whose HorizontalPodAutoscaler targets one Pods metric per runtime through the
custom metrics API. The prometheus-adapter rules that serve those metrics are ``adapter_rules()``
(``python -m deployments.backends.load_metrics`` prints them; docs/kubernetes.md shows them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from deployments.backends.manifests_common import MODEL_PORT, TRITON_METRICS_PORT


@dataclass(frozen=True)
class LoadGauges:
    port: int  # where the runtime serves /metrics
    gauges: tuple[str, ...]  # summed: the requests the server is working on or queueing
    hpa_metric: str  # the Pods metric the adapter serves their per-pod sum as


VLLM = LoadGauges(MODEL_PORT, ("vllm:num_requests_running", "vllm:num_requests_waiting"), "vllm_requests_inflight")
RUNTIME_LOAD: dict[str, LoadGauges] = {
    "vllm": VLLM,
    "builtin": VLLM,
    "tgi": LoadGauges(MODEL_PORT, ("tgi_batch_current_size", "tgi_queue_size"), "tgi_requests_inflight"),
    # Triton counts what waits; what executes finishes on SIGTERM within --exit-timeout-secs.
    "triton": LoadGauges(TRITON_METRICS_PORT, ("nv_inference_pending_request_count",), "triton_requests_pending"),
}


def load_of(runtime: str) -> LoadGauges:
    return RUNTIME_LOAD.get(runtime, VLLM)


def adapter_rules() -> dict[str, Any]:
    """prometheus-adapter ``rules``: each runtime's gauges summed per pod, served under its ``hpa_metric``.

    The series query picks one gauge, so the adapter discovers one metric per runtime; the metrics query sums all
    of the runtime's gauges for the pods the HPA asks about.
    """
    rules = []
    for load in dict.fromkeys(RUNTIME_LOAD.values()):
        names = "|".join(load.gauges)
        rules.append(
            {
                "seriesQuery": f'{{__name__="{load.gauges[0]}",namespace!="",pod!=""}}',
                "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
                "name": {"matches": f"^{load.gauges[0]}$", "as": load.hpa_metric},
                "metricsQuery": f'sum({{__name__=~"{names}",<<.LabelMatchers>>}}) by (<<.GroupBy>>)',
            }
        )
    return {"rules": rules}


def adapter_rules_yaml() -> str:
    return yaml.safe_dump(adapter_rules(), sort_keys=False, default_flow_style=False, width=200)


if __name__ == "__main__":
    print(adapter_rules_yaml(), end="")
