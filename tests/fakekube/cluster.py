"""The fake cluster's machines and time: Nodes (labels, allocatable resources, taints) and an injectable clock.

The default cluster has, for every GPU type of ``DEFAULT_GPU_PLACEMENT``, 4 nodes of 8 GPUs labelled with NVIDIA's
``nvidia.com/gpu.product`` and tainted ``nvidia.com/gpu:NoSchedule`` as GPU node pools usually are, plus 2 CPU
nodes without taints. ``gpu_nodes`` and ``cpu_nodes`` build other shapes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deployments.backends.manifests_common import DEFAULT_GPU_PLACEMENT, GPU_RESOURCE

GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}


@dataclass(frozen=True)
class NodeSpec:
    """One Node: its name, labels, what it can give pods, its taints."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    allocatable: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Mapping[str, str], ...] = ()
    unschedulable: bool = False


def node_object(spec: NodeSpec, now: str) -> dict[str, Any]:
    allocatable = {"pods": "110", "ephemeral-storage": "1Ti", **spec.allocatable}
    labels = {
        "kubernetes.io/hostname": spec.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        **spec.labels,
    }
    node_spec: dict[str, Any] = {}
    if spec.taints:
        node_spec["taints"] = [dict(t) for t in spec.taints]
    if spec.unschedulable:
        node_spec["unschedulable"] = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": spec.name, "labels": labels},
        "spec": node_spec,
        "status": {
            "capacity": dict(allocatable),
            "allocatable": dict(allocatable),
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
            "addresses": [{"type": "Hostname", "address": spec.name}],
        },
    }


def gpu_nodes(
    gpu_type: str, count: int, gpus: int = 8, cpu: str = "208", memory: str = "2Ti", storage: str = "28Ti"
) -> list[NodeSpec]:
    """``count`` GPU nodes of the type's placement (its node selector labels, the GPU taint)."""
    selector = dict(DEFAULT_GPU_PLACEMENT.get(gpu_type, {}).get("nodeSelector") or {})
    allocatable = {"cpu": cpu, "memory": memory, GPU_RESOURCE: str(gpus), "ephemeral-storage": storage}
    return [NodeSpec(f"{gpu_type}-{i}", selector, allocatable, (GPU_TAINT,)) for i in range(count)]


def cpu_nodes(count: int, cpu: str = "64", memory: str = "256Gi", storage: str = "2Ti") -> list[NodeSpec]:
    allocatable = {"cpu": cpu, "memory": memory, "ephemeral-storage": storage}
    return [NodeSpec(f"cpu-{i}", {}, allocatable) for i in range(count)]


def default_nodes(gpu_nodes_per_type: int = 4, cpu_node_count: int = 2) -> list[NodeSpec]:
    nodes = [n for gpu_type in sorted(DEFAULT_GPU_PLACEMENT) for n in gpu_nodes(gpu_type, gpu_nodes_per_type)]
    return nodes + cpu_nodes(cpu_node_count)


class FakeClock:
    """A clock that moves only when told: ``advance(600)`` passes a progress deadline without waiting."""

    def __init__(self, start: float | None = None) -> None:
        self.now = float(start if start is not None else int(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
