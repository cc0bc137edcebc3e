"""Fixtures of the fake's own tests: a server on a fake clock whose controllers run only when a test steps them,
and the official client pointed at it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.fakekube.cluster import FakeClock, NodeSpec, cpu_nodes, gpu_nodes
from tests.fakekube.server import FakeKubeServer
from tests.fakekube.store import Store

NS = "t1"
APPLY: dict[str, Any] = {"_content_type": "application/apply-patch+yaml"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_800_000_000)


@pytest.fixture
def nodes() -> list[NodeSpec]:
    """Two H100 nodes of 8 GPUs and one CPU node: small enough to run out of."""
    return gpu_nodes("nvidia-h100", 2) + cpu_nodes(1)


@pytest.fixture
def cluster(clock: FakeClock, nodes: list[NodeSpec]) -> Iterator[FakeKubeServer]:
    """A fake API server whose controllers wait for ``store.controller.step()`` / ``settle()``."""
    server = FakeKubeServer(nodes=nodes, store=Store(clock=clock)).start()
    server.store.auto_ready = False
    yield server
    server.stop()


@pytest.fixture
def api(cluster: FakeKubeServer) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    configuration.host = cluster.url
    configuration.retries = False
    client = k8s.ApiClient(configuration)
    k8s.CoreV1Api(client).create_namespace({"metadata": {"name": NS}})
    return client


def raw(response: Any) -> dict[str, Any]:
    """The JSON body of a call made with ``_preload_content=False``."""
    return dict(json.loads(response.data))


def deployment(
    name: str = "web",
    replicas: int | None = 2,
    image: str = "registry.example/web:1",
    gpus: int = 0,
    **spec: Any,
) -> dict[str, Any]:
    """A Deployment as a manifest would give it (surge-only rollout unless ``strategy`` says otherwise)."""
    resources: dict[str, Any] = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}
    pod: dict[str, Any] = {
        "containers": [
            {
                "name": "model",
                "image": image,
                "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
                "resources": resources,
                "startupProbe": {
                    "httpGet": {"path": "/health", "port": "http"},
                    "periodSeconds": 10,
                    "failureThreshold": 6,
                },
            }
        ]
    }
    if gpus:
        resources["requests"]["nvidia.com/gpu"] = resources["limits"]["nvidia.com/gpu"] = str(gpus)
        pod["nodeSelector"] = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    body: dict[str, Any] = {
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": pod},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        **spec,
    }
    if replicas is not None:
        body["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": body,
    }


def service(name: str = "web", selector: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "selector": selector or {"app": name},
            "ports": [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}],
        },
    }
