"""The fake kubelet's pod statuses under injected faults (image pull, crash loop, OOM kill, startup probe), with
back-offs on the fake clock, and the EndpointSlices that list the pods' addresses and readiness."""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s

from tests.fakekube.cluster import FakeClock
from tests.fakekube.conftest import APPLY, NS, deployment, raw, service
from tests.fakekube.server import FakeKubeServer

KW: dict[str, Any] = {"field_manager": "frontdoor", "force": True, "_preload_content": False, **APPLY}
IMAGE = "registry.example/web:1"


def start(api: k8s.ApiClient, cluster: FakeKubeServer, replicas: int = 1) -> None:
    body = deployment(replicas=replicas, image=IMAGE)
    k8s.AppsV1Api(api).patch_namespaced_deployment("web", NS, body, **KW)
    cluster.store.controller.settle()


def the_pod(cluster: FakeKubeServer) -> dict[str, Any]:
    with cluster.store.lock:
        (pod,) = [p for p in cluster.store.list("pods", NS, "app=web") if "deletionTimestamp" not in p["metadata"]]
    return pod


def model(pod: dict[str, Any]) -> dict[str, Any]:
    status: dict[str, Any] = pod["status"]["containerStatuses"][0]
    return status


def condition(pod: dict[str, Any], type_: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in pod["status"]["conditions"] if c["type"] == type_)
    return found


def events(cluster: FakeKubeServer, reason: str) -> list[str]:
    with cluster.store.lock:
        return [e["message"] for e in cluster.store.list("events", NS, "") if e["reason"] == reason]


def test_an_image_that_cannot_be_pulled_waits_in_back_off_and_runs_once_it_can(
    api: k8s.ApiClient, cluster: FakeKubeServer, clock: FakeClock
) -> None:
    cluster.store.controller.inject("ErrImagePull", image=IMAGE)
    body = deployment(replicas=1, image=IMAGE)
    k8s.AppsV1Api(api).patch_namespaced_deployment("web", NS, body, **KW)
    cluster.store.controller.step()  # created and scheduled
    cluster.store.controller.step()  # the pull fails

    pod = the_pod(cluster)
    assert pod["status"]["phase"] == "Pending"
    waiting = model(pod)["state"]["waiting"]
    assert waiting["reason"] == "ErrImagePull"
    assert waiting["message"].startswith(f'rpc error: code = NotFound desc = failed to pull and unpack image "{IMAGE}"')
    assert events(cluster, "Failed")[0].startswith(f'Failed to pull image "{IMAGE}": rpc error')

    cluster.store.controller.settle()
    pod = the_pod(cluster)
    assert model(pod)["state"]["waiting"] == {
        "reason": "ImagePullBackOff",
        "message": f'Back-off pulling image "{IMAGE}"',
    }
    assert condition(pod, "Ready")["status"] == "False"
    assert condition(pod, "Ready")["message"] == "containers with unready status: [model]"

    cluster.store.controller.clear_faults()
    cluster.store.controller.settle()
    assert "waiting" in model(the_pod(cluster))["state"]  # not before its back-off has passed
    clock.advance(11)
    cluster.store.controller.settle()
    pod = the_pod(cluster)
    assert pod["status"]["phase"] == "Running" and condition(pod, "Ready")["status"] == "True"


def test_a_crashing_container_loops_in_back_off_and_counts_its_restarts(
    api: k8s.ApiClient, cluster: FakeKubeServer, clock: FakeClock
) -> None:
    start(api, cluster)
    cluster.store.controller.inject("CrashLoopBackOff", image=IMAGE)
    cluster.store.controller.settle()

    pod = the_pod(cluster)
    status = model(pod)
    assert pod["status"]["phase"] == "Running"
    assert status["ready"] is False and status["restartCount"] == 1
    assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert status["state"]["waiting"]["message"].startswith("back-off 10s restarting failed container=model pod=")
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert status["lastState"]["terminated"]["reason"] == "Error"

    clock.advance(11)
    cluster.store.controller.settle()
    status = model(the_pod(cluster))
    assert status["restartCount"] == 2
    assert status["state"]["waiting"]["message"].startswith("back-off 20s restarting failed container=model")
    assert events(cluster, "BackOff")[0].startswith("Back-off restarting failed container model in pod ")

    cluster.store.controller.clear_faults()
    clock.advance(21)
    cluster.store.controller.settle()
    status = model(the_pod(cluster))
    assert status["ready"] is True and status["restartCount"] == 3
    assert cluster.store.get("deployments", NS, "web")["status"]["readyReplicas"] == 1


def test_an_oom_killed_container_shows_the_kill(api: k8s.ApiClient, cluster: FakeKubeServer) -> None:
    start(api, cluster)
    cluster.store.controller.inject("OOMKilled", pod=the_pod(cluster)["metadata"]["name"], namespace=NS)
    cluster.store.controller.settle()

    status = model(the_pod(cluster))
    assert status["lastState"]["terminated"]["reason"] == "OOMKilled"
    assert status["lastState"]["terminated"]["exitCode"] == 137
    assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert status["restartCount"] == 1
    assert cluster.store.get("deployments", NS, "web")["status"].get("readyReplicas", 0) == 0


def test_a_failing_startup_probe_restarts_the_container_after_the_probes_window(
    api: k8s.ApiClient, cluster: FakeKubeServer, clock: FakeClock
) -> None:
    cluster.store.controller.inject("StartupProbeFailure", image=IMAGE)
    start(api, cluster)
    status = model(the_pod(cluster))
    assert "running" in status["state"] and status["started"] is False and status["ready"] is False
    assert status["restartCount"] == 0

    clock.advance(61)  # periodSeconds 10 x failureThreshold 6
    cluster.store.controller.settle()

    pod = the_pod(cluster)
    status = model(pod)
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 137
    ip = pod["status"]["podIP"]
    assert events(cluster, "Unhealthy") == [
        f'Startup probe failed: Get "http://{ip}:8000/health": dial tcp {ip}:8000: connect: connection refused'
    ]
    assert events(cluster, "Killing") == ["Container model failed startup probe, will be restarted"]


def test_endpoint_slices_list_the_selected_pods_addresses_and_readiness(
    api: k8s.ApiClient, cluster: FakeKubeServer
) -> None:
    k8s.CoreV1Api(api).patch_namespaced_service("web", NS, service(), **KW)
    start(api, cluster, replicas=2)
    crashing = sorted(p["metadata"]["name"] for p in cluster.store.list("pods", NS, "app=web"))[0]
    cluster.store.controller.inject("CrashLoopBackOff", pod=crashing, namespace=NS)
    cluster.store.controller.settle()

    listed = raw(
        k8s.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
            NS, label_selector="kubernetes.io/service-name=web", _preload_content=False
        )
    )
    (endpoint_slice,) = listed["items"]
    assert endpoint_slice["addressType"] == "IPv4"
    assert endpoint_slice["ports"] == [{"port": 8000, "protocol": "TCP", "name": "http"}]
    assert endpoint_slice["metadata"]["ownerReferences"][0]["kind"] == "Service"
    by_pod = {e["targetRef"]["name"]: e for e in endpoint_slice["endpoints"]}
    pods = {p["metadata"]["name"]: p for p in cluster.store.list("pods", NS, "app=web")}
    assert set(by_pod) == set(pods)
    for name, endpoint in by_pod.items():
        assert endpoint["addresses"] == [pods[name]["status"]["podIP"]]
        assert endpoint["conditions"]["ready"] is (name != crashing)

    k8s.AppsV1Api(api).patch_namespaced_deployment("web", NS, deployment(replicas=1, image=IMAGE), **KW)
    cluster.store.controller.step()
    (endpoint_slice,) = cluster.store.list("endpointslices", NS, "kubernetes.io/service-name=web")
    leaving = [e for e in endpoint_slice["endpoints"] if e["conditions"]["terminating"]]
    assert [e["targetRef"]["name"] for e in leaving] == [crashing]  # terminating for a step, not ready
    assert leaving[0]["conditions"]["ready"] is False
    cluster.store.controller.settle()
    (endpoint_slice,) = cluster.store.list("endpointslices", NS, "kubernetes.io/service-name=web")
    assert len(endpoint_slice["endpoints"]) == 1


def test_the_kubelet_reads_pods_events_and_nodes_through_the_clients_paths(
    api: k8s.ApiClient, cluster: FakeKubeServer
) -> None:
    start(api, cluster)
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    listed = raw(core.list_namespaced_pod(NS, label_selector="app=web", _preload_content=False))["items"]
    assert [p["status"]["phase"] for p in listed] == ["Running"]
    replicasets = raw(apps.list_namespaced_replica_set(NS, _preload_content=False))["items"]
    assert [rs["status"]["readyReplicas"] for rs in replicasets] == [1]
    name = listed[0]["metadata"]["name"]
    about = raw(core.list_namespaced_event(NS, field_selector=f"involvedObject.name={name}", _preload_content=False))
    assert {e["reason"] for e in about["items"]} == {"Scheduled", "Started"}
    node = raw(core.read_node(listed[0]["spec"]["nodeName"], _preload_content=False))
    assert node["status"]["allocatable"]["cpu"] == "64"
