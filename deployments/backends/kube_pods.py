"""A deployment's pods, ReplicaSets and EndpointSlices, read once per pass and grouped by revision.

The backend reads them in three list calls per deployment (by the deployment's label, and the Services' names for
the slices), plus the pods' events only when a pod restarted for a reason its status does not give
(``kube_observe.needs_events``). ``kube_observe`` reads failures and endpoints out of them; ``kube_scaledown``
picks the pods a scale-down removes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.contracts.revision_status import RevisionStatus
from deployments.backends import kube_observe
from deployments.backends.base import DeploymentSpec, DeploymentStatus
from deployments.backends.kube_observe import SERVICE_NAME_LABEL
from deployments.backends.manifests_common import DEPLOYMENT_LABEL, MODEL_PORT, REVISION_LABEL, revision_object_name

# (write?, API function, *args, **kwargs) -> the decoded answer; the backend's counted, error-mapping call.
Call = Callable[..., Any]


@dataclass
class RevisionObjects:
    pods: list[dict[str, Any]] = field(default_factory=list)
    replica_sets: list[dict[str, Any]] = field(default_factory=list)
    slices: list[dict[str, Any]] = field(default_factory=list)


def _revision_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata", {}).get("labels") or {}).get(REVISION_LABEL, ""))


def read_objects(
    call: Call, apis: Mapping[str, Callable[..., Any]], namespace: str, deployment: str, services: list[str]
) -> dict[str, RevisionObjects]:
    """The deployment's pods and ReplicaSets by revision label (``r1``), and each Service's EndpointSlices by the
    revision label of the Service they belong to (``<deployment>-r<n>`` → ``r<n>``)."""
    by_revision: dict[str, RevisionObjects] = {}
    selector = f"{DEPLOYMENT_LABEL}={deployment}"
    for pod in call(False, apis["pods"], namespace, label_selector=selector).get("items", []):
        by_revision.setdefault(_revision_of(pod), RevisionObjects()).pods.append(pod)
    for replica_set in call(False, apis["replicasets"], namespace, label_selector=selector).get("items", []):
        by_revision.setdefault(_revision_of(replica_set), RevisionObjects()).replica_sets.append(replica_set)
    if services:
        slice_selector = f"{SERVICE_NAME_LABEL} in ({','.join(sorted(services))})"
        for endpoint_slice in call(False, apis["endpointslices"], namespace, label_selector=slice_selector).get(
            "items", []
        ):
            service = str((endpoint_slice.get("metadata", {}).get("labels") or {}).get(SERVICE_NAME_LABEL, ""))
            revision = service.rsplit("-", 1)[-1] if service.startswith(f"{deployment}-r") else ""
            by_revision.setdefault(revision, RevisionObjects()).slices.append(endpoint_slice)
    return by_revision


def read_events(call: Call, list_events: Callable[..., Any], namespace: str, pod_names: list[str]) -> list[Any]:
    """The events of ``pod_names`` (one list call per pod, by ``involvedObject.name``)."""
    events: list[Any] = []
    for name in pod_names:
        answer = call(False, list_events, namespace, field_selector=f"involvedObject.name={name}")
        events.extend(e for e in answer.get("items", []) if (e.get("involvedObject") or {}).get("name") == name)
    return events


def observe(
    call: Call,
    list_events: Callable[..., Any],
    deployment: DeploymentSpec,
    namespace: str,
    found: Mapping[str, dict[str, Any]],
    objects: Mapping[str, RevisionObjects],
    leaving: Mapping[str, frozenset[str]],
) -> DeploymentStatus:
    """Each revision's replicas, its ready pods' endpoints (less those leaving before a scale-down) and, when some
    are missing, why: capacity the scheduler lacks, or a failure the tenant must fix."""
    status = DeploymentStatus(exists=bool(found))
    for revision in deployment.revisions:
        obj = found.get(revision_object_name(deployment.name, revision.number))
        if obj is None:
            continue
        label = f"r{revision.number}"
        mine = objects.get(label, RevisionObjects())
        gone = leaving.get(label, frozenset())
        desired = int(obj.get("spec", {}).get("replicas", revision.replicas) or 0)
        endpoints = kube_observe.ready_endpoints(mine.slices, MODEL_PORT, gone)
        rstatus = RevisionStatus(
            revision.id, desired_replicas=desired, ready_replicas=len(endpoints), endpoints=endpoints
        )
        rstatus.leaving = len(gone)
        if len(endpoints) + len(gone) < desired:
            _explain_shortfall(call, list_events, namespace, obj, mine, rstatus)
        status.revisions[revision.id] = rstatus
    return status


def _explain_shortfall(
    call: Call,
    list_events: Callable[..., Any],
    namespace: str,
    obj: Mapping[str, Any],
    mine: RevisionObjects,
    rstatus: RevisionStatus,
) -> None:
    rstatus.waiting_for_capacity = kube_observe.unschedulable(mine.pods)
    events: list[Any] = []
    if kube_observe.needs_events(mine.pods):
        events = read_events(call, list_events, namespace, [str(p["metadata"]["name"]) for p in mine.pods])
    failure = (
        kube_observe.deadline_exceeded(obj)
        or kube_observe.replica_failure(mine.replica_sets)
        or kube_observe.pod_failure(mine.pods, events)
    )
    if failure is not None:
        rstatus.failure_reason, rstatus.failure_message = failure.reason, failure.message
