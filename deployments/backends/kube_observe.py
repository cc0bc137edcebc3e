"""What a revision's Kubernetes objects say about it, beyond replica counts: why replicas fail, and where they serve.

Pure functions over objects as the API server returns them (dicts), so they are tested without a server:

- ``failure``: the first reason a revision's replicas do not come up, in the cluster's own words: the Deployment's
  progress deadline, a ReplicaSet that cannot create pods (a ResourceQuota), and per pod an image that cannot be
  pulled, a crash loop, an OOM kill, a container config error, or a startup probe that keeps killing the container
  (told by the pod's events). Unschedulable pods are not failures: they wait for capacity (``unschedulable``).
- ``ready_endpoints``: the revision's ready pod addresses from its Service's EndpointSlices, which the gateway balances
  across itself (a Service's ClusterIP would leave the spreading to kube-proxy, per connection).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Container states whose waiting reason is a failure a tenant must act on.
WAITING_FAILURES = (
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
)
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str


def _conditions(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list((obj.get("status") or {}).get("conditions") or [])


def deadline_exceeded(deployment: Mapping[str, Any]) -> Failure | None:
    for condition in _conditions(deployment):
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return Failure(
                "ProgressDeadlineExceeded", str(condition.get("message") or "the rollout stopped progressing")
            )
    return None


def replica_failure(replica_sets: Iterable[Mapping[str, Any]]) -> Failure | None:
    """A ReplicaSet that cannot create its pods: ``FailedCreate`` with the API server's refusal (a quota's)."""
    for replica_set in replica_sets:
        for condition in _conditions(replica_set):
            if condition.get("type") == "ReplicaFailure" and str(condition.get("status")) == "True":
                return Failure(str(condition.get("reason") or "FailedCreate"), str(condition.get("message") or ""))
    return None


def _container_failure(pod_name: str, status: Mapping[str, Any]) -> Failure | None:
    name = status.get("name", "model")
    waiting = (status.get("state") or {}).get("waiting") or {}
    reason = str(waiting.get("reason") or "")
    last = (status.get("lastState") or {}).get("terminated") or {}
    restarts = int(status.get("restartCount") or 0)
    if last.get("reason") == "OOMKilled":
        return Failure(
            "OOMKilled",
            f"pod {pod_name}: container {name} was killed for using more memory than its limit "
            f"(exit code {last.get('exitCode', 137)}, {restarts} restarts); raise memory_gib",
        )
    if reason in WAITING_FAILURES:
        detail = str(waiting.get("message") or "")
        if reason == "CrashLoopBackOff" and last:
            detail = f"exit code {last.get('exitCode')}, {restarts} restarts" + (f": {detail}" if detail else "")
        return Failure(reason, f"pod {pod_name}: container {name}: {detail}".rstrip(": "))
    return None


def _startup_probe_failure(pod_name: str, events: Iterable[Mapping[str, Any]]) -> Failure | None:
    for event in events:
        if (event.get("involvedObject") or {}).get("name") != pod_name:
            continue
        message = str(event.get("message") or "")
        if "startup probe" in message.lower() and event.get("reason") in ("Unhealthy", "Killing"):
            return Failure(
                "StartupProbeFailed",
                f"pod {pod_name}: {message} (the model did not load within startup_timeout_s; raise it)",
            )
    return None


def pod_failure(pods: Iterable[Mapping[str, Any]], events: Iterable[Mapping[str, Any]] = ()) -> Failure | None:
    """The first failing container of ``pods``; a restarted one with no reason of its own is looked up in the
    pod's events (a startup probe kill leaves only an event behind)."""
    restarted: list[str] = []
    for pod in pods:
        pod_name = str(pod["metadata"]["name"])
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if found := _container_failure(pod_name, status):
                return found
            if int(status.get("restartCount") or 0) > 0:
                restarted.append(pod_name)
    events = list(events)
    for pod_name in restarted:
        if found := _startup_probe_failure(pod_name, events):
            return found
    return None


def needs_events(pods: Iterable[Mapping[str, Any]]) -> bool:
    """Whether a pod restarted without a reason its status gives: only then are its events read."""
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if int(status.get("restartCount") or 0) > 0 and _container_failure("", status) is None:
                return True
    return False


def unschedulable(pods: Iterable[Mapping[str, Any]]) -> str | None:
    """The scheduler's message for a Pending pod it could not place."""
    for pod in pods:
        status = pod.get("status") or {}
        if status.get("phase") != "Pending":
            continue
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
                return str(condition.get("message") or "Unschedulable")
    return None


def ready_endpoints(slices: Iterable[Mapping[str, Any]], port: int, leaving: frozenset[str] = frozenset()) -> list[str]:
    """``http://<address>:<port>`` of every ready, not terminating endpoint in ``slices``, except the pods named in
    ``leaving`` (being drained before a scale-down), sorted so that an unchanged set reads the same."""
    found: set[str] = set()
    for endpoint_slice in slices:
        for endpoint in endpoint_slice.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            if conditions.get("ready") is False or conditions.get("terminating") is True:
                continue
            if (endpoint.get("targetRef") or {}).get("name") in leaving:
                continue
            for address in endpoint.get("addresses") or []:
                host = f"[{address}]" if ":" in str(address) else str(address)
                found.add(f"http://{host}:{port}")
    return sorted(found)
