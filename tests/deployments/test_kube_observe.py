"""Reading why a revision's replicas fail, and where they serve, from objects as the API server returns them."""

from __future__ import annotations

from typing import Any

from deployments.backends import kube_observe as observe


def pod(name: str, *statuses: dict[str, Any], phase: str = "Running", **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"phase": phase, "containerStatuses": list(statuses), **extra}}


def container(**fields: Any) -> dict[str, Any]:
    return {"name": "model", "ready": False, "restartCount": 0, **fields}


def test_an_image_that_cannot_be_pulled_is_a_failure_with_the_kubelets_message() -> None:
    waiting = {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "vllm/vllm-openai:v9"'}
    found = observe.pod_failure([pod("chat-r1-abc-1", container(state={"waiting": waiting}))])

    assert found == observe.Failure(
        "ImagePullBackOff", 'pod chat-r1-abc-1: container model: Back-off pulling image "vllm/vllm-openai:v9"'
    )


def test_a_crash_loop_says_its_exit_code_and_restarts() -> None:
    status = container(
        state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container"}},
        lastState={"terminated": {"reason": "Error", "exitCode": 1}},
        restartCount=7,
    )
    found = observe.pod_failure([pod("p", status)])

    assert found is not None and found.reason == "CrashLoopBackOff"
    assert "exit code 1, 7 restarts: back-off 5m0s" in found.message


def test_an_oom_kill_is_named_as_such_even_while_the_container_backs_off() -> None:
    status = container(
        state={"waiting": {"reason": "CrashLoopBackOff"}},
        lastState={"terminated": {"reason": "OOMKilled", "exitCode": 137}},
        restartCount=2,
    )
    found = observe.pod_failure([pod("p", status)])

    assert found is not None and found.reason == "OOMKilled"
    assert "more memory than its limit (exit code 137, 2 restarts); raise memory_gib" in found.message


def test_a_startup_probe_kill_is_found_in_the_pods_events_only_when_it_restarted() -> None:
    restarted = pod(
        "p", container(state={"running": {}}, lastState={"terminated": {"reason": "Error"}}, restartCount=3)
    )
    events = [
        {"involvedObject": {"name": "other"}, "reason": "Unhealthy", "message": "Startup probe failed: refused"},
        {"involvedObject": {"name": "p"}, "reason": "Killing", "message": "Container model failed startup probe"},
    ]

    assert observe.needs_events([restarted])
    found = observe.pod_failure([restarted], events)
    assert found is not None and found.reason == "StartupProbeFailed"
    assert "Container model failed startup probe" in found.message and "startup_timeout_s" in found.message
    healthy = pod("q", container(ready=True, state={"running": {}}))
    assert not observe.needs_events([healthy])
    assert observe.pod_failure([healthy], events) is None


def test_a_replicaset_refused_its_pods_by_a_quota_is_failed_create() -> None:
    message = 'pods "chat-r1-abc-1" is forbidden: exceeded quota: frontdoor-quota, requested: requests.cpu=16'
    replica_set = {
        "status": {
            "conditions": [{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": message}]
        }
    }

    assert observe.replica_failure([replica_set]) == observe.Failure("FailedCreate", message)
    assert observe.replica_failure([{"status": {}}]) is None


def test_a_rollout_past_its_deadline_is_a_failure() -> None:
    deployment = {
        "status": {
            "conditions": [
                {"type": "Available", "status": "False"},
                {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": 'ReplicaSet "chat-r1-abc" has timed out progressing.',
                },
            ]
        }
    }

    assert observe.deadline_exceeded(deployment) == observe.Failure(
        "ProgressDeadlineExceeded", 'ReplicaSet "chat-r1-abc" has timed out progressing.'
    )


def test_pending_pods_wait_for_capacity_rather_than_fail() -> None:
    condition = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
    }
    pending = pod("p", phase="Pending", conditions=[condition])

    assert observe.unschedulable([pending]) == "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    assert observe.pod_failure([pending]) is None


def test_ready_endpoints_are_the_ready_pods_of_the_slices_less_those_leaving() -> None:
    def endpoint(address: str, name: str, **conditions: bool) -> dict[str, Any]:
        return {"addresses": [address], "targetRef": {"kind": "Pod", "name": name}, "conditions": conditions}

    slices = [
        {"endpoints": [endpoint("10.0.0.2", "a", ready=True), endpoint("10.0.0.3", "b", ready=False)]},
        {"endpoints": [endpoint("10.0.0.4", "c", ready=True, terminating=True), endpoint("fd00::5", "d", ready=True)]},
        {"endpoints": [endpoint("10.0.0.6", "e", ready=True)]},
    ]

    assert observe.ready_endpoints(slices, 8000, leaving=frozenset({"e"})) == [
        "http://10.0.0.2:8000",
        "http://[fd00::5]:8000",
    ]
