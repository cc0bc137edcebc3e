"""The fake's scheduler and quota admission: pods land on nodes their selector, tolerations and requests allow; a
pod that fits nowhere stays Pending with the scheduler's message; a pod past the namespace's ResourceQuota is not
created and its ReplicaSet says why, in the API server's words."""

from __future__ import annotations

import re
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.fakekube.cluster import NodeSpec, gpu_nodes
from tests.fakekube.conftest import APPLY, NS, deployment, raw
from tests.fakekube.server import FakeKubeServer

KW: dict[str, Any] = {"field_manager": "frontdoor", "force": True, "_preload_content": False, **APPLY}
POD = "[bcdfghjklmnpqrstvwxz2456789]+-[bcdfghjklmnpqrstvwxz2456789]{5}"


def apply(api: k8s.ApiClient, body: dict[str, Any]) -> dict[str, Any]:
    return raw(k8s.AppsV1Api(api).patch_namespaced_deployment(body["metadata"]["name"], NS, body, **KW))


def pods(cluster: FakeKubeServer, selector: str = "") -> list[dict[str, Any]]:
    with cluster.store.lock:
        return [p for p in cluster.store.list("pods", NS, selector) if "deletionTimestamp" not in p["metadata"]]


def scheduled(pod: dict[str, Any]) -> dict[str, Any]:
    condition: dict[str, Any] = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    return condition


def quota(api: k8s.ApiClient, hard: dict[str, str]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "frontdoor-quota"},
        "spec": {"hard": hard},
    }
    k8s.CoreV1Api(api).patch_namespaced_resource_quota("frontdoor-quota", NS, body, **KW)


PREEMPTION = " preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod.."


@pytest.mark.parametrize("nodes", [gpu_nodes("nvidia-h100", 2)])
@pytest.mark.parametrize("with_preemption", [True, False])
def test_a_pod_that_fits_nowhere_stays_pending_with_the_schedulers_message(
    api: k8s.ApiClient, cluster: FakeKubeServer, nodes: list[NodeSpec], with_preemption: bool
) -> None:
    cluster.store.controller.preemption_message = with_preemption
    apply(api, deployment(replicas=3, gpus=8))
    cluster.store.controller.settle()

    placed = sorted(p["spec"].get("nodeName", "") for p in pods(cluster))
    assert placed == ["", "nvidia-h100-0", "nvidia-h100-1"]
    waiting = waiting_pod(cluster)
    assert waiting["status"]["phase"] == "Pending"
    condition = scheduled(waiting)
    assert condition["status"] == "False" and condition["reason"] == "Unschedulable"
    assert condition["message"] == "0/2 nodes are available: 2 Insufficient nvidia.com/gpu." + (
        PREEMPTION if with_preemption else ""
    )
    events = [e for e in cluster.store.list("events", NS, "") if e["reason"] == "FailedScheduling"]
    assert [e["involvedObject"]["name"] for e in events] == [waiting["metadata"]["name"]]
    assert events[0]["type"] == "Warning" and events[0]["message"] == condition["message"]


def waiting_pod(cluster: FakeKubeServer) -> dict[str, Any]:
    (pod,) = [p for p in pods(cluster) if not p["spec"].get("nodeName")]
    return pod


def test_the_message_counts_each_nodes_first_reason(api: k8s.ApiClient, cluster: FakeKubeServer) -> None:
    untolerating = deployment("cpu-heavy", replicas=1)
    untolerating["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "100"
    apply(api, untolerating)
    cluster.store.controller.settle()
    assert scheduled(waiting_pod(cluster))["message"].startswith(
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {nvidia.com/gpu: present}. "
        "preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, "
        "2 Preemption is not helpful for scheduling.."
    )


def test_a_pending_pod_is_placed_once_capacity_frees_up(api: k8s.ApiClient, cluster: FakeKubeServer) -> None:
    apply(api, deployment("first", replicas=2, gpus=8))
    apply(api, deployment("second", replicas=1, gpus=8))
    cluster.store.controller.settle()
    assert not waiting_pod(cluster)["spec"].get("nodeName")

    k8s.AppsV1Api(api).delete_namespaced_deployment("first", NS)
    cluster.store.controller.settle()

    (pod,) = pods(cluster, "app=second")
    assert pod["spec"]["nodeName"].startswith("nvidia-h100-") and pod["status"]["phase"] == "Running"


def test_a_pod_past_the_quota_is_not_created_and_the_replicaset_says_why(
    api: k8s.ApiClient, cluster: FakeKubeServer
) -> None:
    quota(api, {"requests.nvidia.com/gpu": "8", "pods": "10"})
    apply(api, deployment(replicas=3, gpus=4))
    cluster.store.controller.settle()

    assert len(pods(cluster)) == 2
    (rs,) = cluster.store.list("replicasets", NS, "")
    failure = next(c for c in rs["status"]["conditions"] if c["type"] == "ReplicaFailure")
    assert failure["status"] == "True" and failure["reason"] == "FailedCreate"
    assert re.fullmatch(
        f'pods "web-{POD}" is forbidden: exceeded quota: frontdoor-quota, requested: requests.nvidia.com/gpu=4, '
        "used: requests.nvidia.com/gpu=8, limited: requests.nvidia.com/gpu=8",
        failure["message"],
    ), failure["message"]
    conditions = {c["type"]: c for c in cluster.store.get("deployments", NS, "web")["status"]["conditions"]}
    assert conditions["ReplicaFailure"]["message"] == failure["message"]
    events = [e["message"] for e in cluster.store.list("events", NS, "") if e["reason"] == "FailedCreate"]
    assert events == [f"Error creating: {failure['message']}"]
    used = cluster.store.get("resourcequotas", NS, "frontdoor-quota")["status"]["used"]
    assert used == {"requests.nvidia.com/gpu": "8", "pods": "2"}

    quota(api, {"requests.nvidia.com/gpu": "12", "pods": "10"})
    cluster.store.controller.settle()
    assert len(pods(cluster)) == 3
    (rs,) = cluster.store.list("replicasets", NS, "")
    assert not any(c["type"] == "ReplicaFailure" for c in rs["status"].get("conditions") or [])


def test_a_pod_created_through_the_api_is_admitted_against_the_quota_too(api: k8s.ApiClient) -> None:
    quota(api, {"pods": "1"})
    pod = {"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}
    k8s.CoreV1Api(api).create_namespaced_pod(NS, pod)
    with pytest.raises(ApiException) as caught:
        k8s.CoreV1Api(api).create_namespaced_pod(NS, {**pod, "metadata": {"name": "b"}})
    assert caught.value.status == 403
    assert '"reason": "Forbidden"' in caught.value.body
    assert (
        'pods \\"b\\" is forbidden: exceeded quota: frontdoor-quota, requested: pods=1, used: pods=1, limited: pods=1'
        in (caught.value.body)
    )


def test_a_pod_added_as_pending_by_hand_is_left_to_the_test(api: k8s.ApiClient, cluster: FakeKubeServer) -> None:
    cluster.store.add_pending_pod(
        NS, "manual-abcde", {"app": "manual"}, "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."
    )
    cluster.store.controller.settle()
    (pod,) = pods(cluster, "app=manual")
    assert "nodeName" not in pod["spec"]
    assert scheduled(pod)["message"] == "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."
