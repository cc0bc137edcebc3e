"""The Deployment and ReplicaSet controllers of the fake: ReplicaSets and pods named and owned as the real ones,
surge rolling updates, the scale-down order (deletion cost included), status, progress deadlines, cascades."""

from __future__ import annotations

import re
import time
from typing import Any

from kubernetes import client as k8s

from tests.fakekube.cluster import FakeClock
from tests.fakekube.conftest import APPLY, NS, deployment, raw
from tests.fakekube.server import FakeKubeServer
from tests.fakekube.workloads import template_hash

KW: dict[str, Any] = {"field_manager": "frontdoor", "force": True, "_preload_content": False, **APPLY}
POD_SUFFIX = "[bcdfghjklmnpqrstvwxz2456789]{5}"


def apply(api: k8s.ApiClient, body: dict[str, Any]) -> dict[str, Any]:
    return raw(k8s.AppsV1Api(api).patch_namespaced_deployment(body["metadata"]["name"], NS, body, **KW))


def objects(cluster: FakeKubeServer, plural: str, selector: str = "") -> list[dict[str, Any]]:
    with cluster.store.lock:
        return list(cluster.store.list(plural, NS, selector))


def live_pods(cluster: FakeKubeServer, selector: str = "app=web") -> list[dict[str, Any]]:
    return [p for p in objects(cluster, "pods", selector) if "deletionTimestamp" not in p["metadata"]]


def ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_it_makes_a_replicaset_and_pods_named_and_owned_as_the_real_controllers_do(
    api: k8s.ApiClient, cluster: FakeKubeServer
) -> None:
    stored = apply(api, deployment(replicas=2))
    cluster.store.controller.step()

    (rs,) = objects(cluster, "replicasets")
    key = template_hash(stored["spec"]["template"])
    assert re.fullmatch("[bcdfghjklmnpqrstvwxz2456789]{1,10}", key)
    assert rs["metadata"]["name"] == f"web-{key}"
    assert rs["metadata"]["labels"] == {"app": "web", "pod-template-hash": key}
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": key}
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    (owner,) = rs["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
        "uid": stored["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    pods = live_pods(cluster)
    assert len(pods) == 2
    for pod in pods:
        assert re.fullmatch(f"web-{key}-{POD_SUFFIX}", pod["metadata"]["name"])
        assert pod["metadata"]["labels"] == {"app": "web", "pod-template-hash": key}
        assert pod["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]
        assert pod["spec"]["nodeName"] == "cpu-0"
        assert pod["status"]["phase"] == "Pending" and not ready(pod)

    cluster.store.controller.step()  # the step after scheduling: running and ready
    for pod in live_pods(cluster):
        assert pod["status"]["phase"] == "Running" and ready(pod)
        assert pod["status"]["podIP"].startswith("10.244.")
        assert pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]

    cluster.store.controller.settle()
    status = cluster.store.get("deployments", NS, "web")["status"]
    assert (status["replicas"], status["updatedReplicas"], status["readyReplicas"], status["availableReplicas"]) == (
        2,
        2,
        2,
        2,
    )
    assert status["observedGeneration"] == 1
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Available"]["status"] == "True"
    assert conditions["Progressing"]["reason"] == "NewReplicaSetAvailable"
    assert conditions["Progressing"]["message"] == f'ReplicaSet "web-{key}" has successfully progressed.'
    annotations = cluster.store.get("deployments", NS, "web")["metadata"]["annotations"]
    assert annotations == {"deployment.kubernetes.io/revision": "1"}


def test_a_surge_rollout_never_drops_below_the_replicas_nor_runs_more_than_one_extra(
    api: k8s.ApiClient, cluster: FakeKubeServer
) -> None:
    apply(api, deployment(replicas=3))
    cluster.store.controller.settle()
    apply(api, deployment(replicas=3, image="registry.example/web:2"))
    for _ in range(40):
        pods = live_pods(cluster)
        assert len(pods) <= 4  # maxSurge 1
        assert sum(1 for p in pods if ready(p)) >= 3  # maxUnavailable 0
        if not cluster.store.controller.step():
            break
    replicasets = {
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]: rs for rs in objects(cluster, "replicasets")
    }
    assert replicasets["2"]["spec"]["replicas"] == 3 and replicasets["1"]["spec"]["replicas"] == 0
    assert all(p["spec"]["containers"][0]["image"] == "registry.example/web:2" for p in live_pods(cluster))
    status = cluster.store.get("deployments", NS, "web")["status"]
    assert status["updatedReplicas"] == status["readyReplicas"] == 3
    scaled = [e["message"] for e in objects(cluster, "events") if e["reason"] == "ScalingReplicaSet"]
    old, new = replicasets["1"]["metadata"]["name"], replicasets["2"]["metadata"]["name"]
    assert scaled[-2:] == [f"Scaled up replica set {new} from 2 to 3", f"Scaled down replica set {old} from 1 to 0"]


def test_scaling_down_deletes_the_pods_with_the_lowest_deletion_cost_first(
    api: k8s.ApiClient, cluster: FakeKubeServer
) -> None:
    core = k8s.CoreV1Api(api)
    apply(api, deployment(replicas=4))
    cluster.store.controller.settle()
    names = sorted(p["metadata"]["name"] for p in live_pods(cluster))
    for name, cost in zip(names, ("100", "-50", None, "10"), strict=True):
        if cost is not None:
            patch = {"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": cost}}}
            core.patch_namespaced_pod(name, NS, patch)

    apply(api, deployment(replicas=2))
    cluster.store.controller.step()

    terminating = sorted(
        p["metadata"]["name"] for p in objects(cluster, "pods") if "deletionTimestamp" in p["metadata"]
    )
    assert terminating == sorted([names[1], names[2]])  # costs -50 and 0 go; 100 and 10 stay
    cluster.store.controller.settle()
    assert sorted(p["metadata"]["name"] for p in objects(cluster, "pods")) == sorted([names[0], names[3]])


def test_scaling_down_takes_not_ready_pods_before_ready_ones_whatever_their_cost(
    api: k8s.ApiClient, cluster: FakeKubeServer
) -> None:
    core = k8s.CoreV1Api(api)
    apply(api, deployment(replicas=3))
    cluster.store.controller.settle()
    first, second, third = sorted(p["metadata"]["name"] for p in live_pods(cluster))
    cheap = {"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": "-100"}}}
    core.patch_namespaced_pod(first, NS, cheap)
    core.patch_namespaced_pod(
        second, NS, {"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": "500"}}}
    )
    cluster.store.controller.inject("CrashLoopBackOff", pod=second, namespace=NS)
    cluster.store.controller.settle()

    apply(api, deployment(replicas=1))
    cluster.store.controller.step()

    deleted = {p["metadata"]["name"] for p in objects(cluster, "pods") if "deletionTimestamp" in p["metadata"]}
    assert deleted == {second, first}  # the crashing one despite its cost, then the cheapest ready one
    assert [p["metadata"]["name"] for p in live_pods(cluster)] == [third]


def test_scaling_down_takes_the_newest_pod_among_equals(
    api: k8s.ApiClient, cluster: FakeKubeServer, clock: FakeClock
) -> None:
    apply(api, deployment(replicas=2))
    cluster.store.controller.settle()
    clock.advance(30)
    apply(api, deployment(replicas=3))
    cluster.store.controller.settle()
    newest = max(live_pods(cluster), key=lambda p: p["metadata"]["creationTimestamp"])["metadata"]["name"]

    apply(api, deployment(replicas=2))
    cluster.store.controller.step()

    assert newest not in {p["metadata"]["name"] for p in live_pods(cluster)}


def test_a_rollout_that_makes_no_progress_exceeds_its_deadline_on_the_clock(
    api: k8s.ApiClient, cluster: FakeKubeServer, clock: FakeClock
) -> None:
    apply(api, deployment(replicas=1))
    cluster.store.controller.settle()
    cluster.store.controller.inject("ErrImagePull", image="registry.example/web:broken")
    apply(api, deployment(replicas=1, image="registry.example/web:broken", progressDeadlineSeconds=600))
    cluster.store.controller.settle()

    def progressing() -> dict[str, Any]:
        conditions = cluster.store.get("deployments", NS, "web")["status"]["conditions"]
        return next(c for c in conditions if c["type"] == "Progressing")

    assert progressing()["status"] == "True" and progressing()["reason"] == "ReplicaSetUpdated"
    clock.advance(300)
    cluster.store.controller.settle()
    assert progressing()["status"] == "True"
    clock.advance(301)
    cluster.store.controller.settle()
    new_rs = next(
        rs["metadata"]["name"]
        for rs in objects(cluster, "replicasets")
        if rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    )
    assert progressing() | {"lastUpdateTime": "", "lastTransitionTime": ""} == {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": f'ReplicaSet "{new_rs}" has timed out progressing.',
        "lastUpdateTime": "",
        "lastTransitionTime": "",
    }
    status = cluster.store.get("deployments", NS, "web")["status"]
    assert status["readyReplicas"] == 1  # the old pod serves on: maxUnavailable 0


def test_deleting_a_deployment_takes_its_replicasets_and_then_its_pods(
    api: k8s.ApiClient, cluster: FakeKubeServer
) -> None:
    apply(api, deployment(replicas=2))
    cluster.store.controller.settle()
    k8s.AppsV1Api(api).delete_namespaced_deployment("web", NS, propagation_policy="Background")
    assert objects(cluster, "replicasets") == []
    assert all("deletionTimestamp" in p["metadata"] for p in objects(cluster, "pods"))  # terminating first
    cluster.store.controller.step()
    assert objects(cluster, "pods") == []


def test_in_auto_ready_mode_a_deployment_is_ready_when_its_write_returns(
    api: k8s.ApiClient, cluster: FakeKubeServer
) -> None:
    cluster.store.auto_ready = True
    stored = apply(api, deployment(replicas=2))
    assert "status" not in stored  # the response is the write's own
    assert cluster.store.get("deployments", NS, "web")["status"]["readyReplicas"] == 2


def test_on_its_own_thread_the_controller_brings_pods_up_without_steps(
    api: k8s.ApiClient, cluster: FakeKubeServer
) -> None:
    cluster.store.controller.start(interval_s=0.01)
    try:
        apply(api, deployment(replicas=2))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with cluster.store.lock:
                status = cluster.store.get("deployments", NS, "web").get("status") or {}
            if status.get("readyReplicas") == 2:
                break
            time.sleep(0.02)
        assert status.get("readyReplicas") == 2
    finally:
        cluster.store.controller.stop()
