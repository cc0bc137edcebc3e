"""The ReplicaSet controller, as ``kube-controller-manager`` runs it, and what the workload controllers share.

A ReplicaSet creates the pods it lacks (``<replicaset>-<5 chars>``, owned by it, labels and spec from the
template), each admitted against the namespace's quota; a refusal sets ``ReplicaFailure=True,
reason=FailedCreate`` with the API server's message and an event, and creation is retried when the namespace's
pods or quota change. Surplus pods are deleted in the controller's order: unscheduled first, then Pending before
Running, not ready before ready, lower ``controller.kubernetes.io/pod-deletion-cost`` first, more pods of the same
workload on the node first, ready for a shorter time first, more restarts first, newer first (the linear variant of
the last two rules). The Deployment controller is ``rollouts.py``.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from tests.fakekube import garbage
from tests.fakekube.kinds import ApiError

if TYPE_CHECKING:
    from tests.fakekube.controller import Controller

MANAGER = "kube-controller-manager"
HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
_SAFE = "bcdfghjklmnpqrstvwxz2456789"
_PHASE_ORDER = {"Pending": 0, "Unknown": 1, "Running": 2}


_HASHES: dict[bytes, str] = {}


def template_hash(template: dict[str, Any], collisions: int = 0) -> str:
    """FNV-32a of the template (and the collision count), its decimal digits in the safe alphabet."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collisions:
        data += str(collisions).encode()
    if data not in _HASHES:
        h = 0x811C9DC5
        for byte in data:
            h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
        if len(_HASHES) > 10_000:
            _HASHES.clear()
        _HASHES[data] = "".join(_SAFE[ord(c) % len(_SAFE)] for c in str(h))
    return _HASHES[data]


def controller_of(obj: dict[str, Any]) -> str | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def owner_ref(owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def is_ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def ready_since(pod: dict[str, Any]) -> str:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            return str(condition.get("lastTransitionTime") or "")
    return ""


def is_active(pod: dict[str, Any]) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and "deletionTimestamp" not in pod["metadata"]


def resolve(value: Any, total: int, round_up: bool) -> int:
    """An IntOrString of a rolling update (``1``, ``"25%"``) as a number of pods."""
    if isinstance(value, str) and value.endswith("%"):
        share = total * int(value[:-1]) / 100
        return math.ceil(share) if round_up else math.floor(share)
    return int(value or 0)


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    now: str,
    with_update_time: bool = False,
    touch: bool = False,
) -> list[dict[str, Any]]:
    """``conditions`` with ``type_`` set: the transition time kept while the status stays (and everything kept
    when the reason does too, unless ``touch`` asks for a new update time)."""
    current = next((c for c in conditions if c.get("type") == type_), None)
    unchanged = current and (current.get("status"), current.get("reason"), current.get("message")) == (
        status,
        reason,
        message,
    )
    if unchanged and not touch:
        return conditions
    condition: dict[str, Any] = {"type": type_, "status": status}
    if with_update_time:
        condition["lastUpdateTime"] = now
    same = current is not None and current.get("status") == status
    condition["lastTransitionTime"] = current.get("lastTransitionTime", now) if same and current else now
    condition.update(reason=reason, message=message)
    return [c for c in conditions if c.get("type") != type_] + [condition]


def _deletion_rank(pod: dict[str, Any], colocated: dict[str, int], created: int) -> tuple[Any, ...]:
    """Sort key: the pods the ReplicaSet controller deletes first come first."""
    spec, status, meta = pod.get("spec") or {}, pod.get("status") or {}, pod["metadata"]
    node = spec.get("nodeName") or ""
    ready = is_ready(pod)
    try:
        cost = int((meta.get("annotations") or {}).get(DELETION_COST, "0"))
    except ValueError:
        cost = 0
    restarts = max((int(c.get("restartCount", 0)) for c in status.get("containerStatuses") or []), default=0)
    since = ready_since(pod) if ready else ""
    return (
        1 if node else 0,
        _PHASE_ORDER.get(status.get("phase", "Pending"), 0),
        1 if ready else 0,
        cost,
        -colocated.get(node, 0) if node else 0,
        _descending(since),
        -restarts,
        _descending(meta.get("creationTimestamp", "")),
        -created,  # within the same second, the one created later
    )


def _descending(text: str) -> tuple[int, ...]:
    """Newer (larger) timestamps sort first; an empty one before all."""
    return tuple(-ord(c) for c in text) if text else (-(10**9),)


def pods_to_delete(
    pods: list[dict[str, Any]], related: list[dict[str, Any]], count: int, order: dict[str, int]
) -> list[dict[str, Any]]:
    """The ``count`` pods to delete first; ``related`` are the workload's pods, ``order`` their creation order."""
    colocated: dict[str, int] = {}
    for pod in related:
        if is_active(pod):
            node = (pod.get("spec") or {}).get("nodeName") or ""
            colocated[node] = colocated.get(node, 0) + 1
    ranked = sorted(pods, key=lambda p: _deletion_rank(p, colocated, order.get(p["metadata"]["uid"], 0)))
    return ranked[:count]


# ---------------------------------------------------------------- ReplicaSets


def sync_replicaset(ctl: Controller, namespace: str, rs: dict[str, Any], pods: list[dict[str, Any]]) -> None:
    store = ctl.store
    uid = rs["metadata"]["uid"]
    name = rs["metadata"]["name"]
    owned = [p for p in pods if controller_of(p) == uid]
    active = [p for p in owned if is_active(p)]
    wanted = int(rs["spec"].get("replicas", 1))
    failure: str | None = None
    if "deletionTimestamp" not in rs["metadata"]:
        if len(active) < wanted and ctl.may_create_pods(namespace, uid):
            for _ in range(wanted - len(active)):
                try:
                    pod = ctl.create_pod(namespace, rs)
                except ApiError as exc:
                    failure = exc.message
                    ctl.creation_failed(namespace, uid, exc.message)
                    ctl.event(rs, "Warning", "FailedCreate", f"Error creating: {exc.message}")
                    break
                active.append(pod)
                ctl.event(rs, "Normal", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}")
        elif len(active) < wanted:
            failure = ctl.last_failure(namespace, uid)
        elif len(active) > wanted:
            related_owners = ctl.sibling_replicasets(namespace, rs)
            related = [p for p in pods if controller_of(p) in related_owners]
            for pod in pods_to_delete(active, related, len(active) - wanted, ctl.creation_order):
                garbage.terminate(store, namespace, pod, None)
                ctl.event(rs, "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}")
                active.remove(pod)
    if len(active) >= wanted:
        ctl.creation_succeeded(namespace, uid)
    now = store.timestamp()
    status: dict[str, Any] = {
        "replicas": len(active),
        "fullyLabeledReplicas": len(active),
        "readyReplicas": sum(1 for p in active if is_ready(p)),
        "availableReplicas": sum(1 for p in active if ctl.is_available(p, int(rs["spec"].get("minReadySeconds", 0)))),
        "observedGeneration": rs["metadata"].get("generation", 1),
    }
    conditions = list((rs.get("status") or {}).get("conditions") or [])
    if failure:
        conditions = set_condition(conditions, "ReplicaFailure", "True", "FailedCreate", failure, now)
    elif len(active) >= wanted:
        conditions = [c for c in conditions if c.get("type") != "ReplicaFailure"]
    if conditions:
        status["conditions"] = conditions
    store.write_status("replicasets", namespace, name, status)


# ---------------------------------------------------------------- Deployments
