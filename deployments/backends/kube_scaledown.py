"""Scaling a revision down on Kubernetes without cutting requests: the pods to remove leave the gateways first.

A ReplicaSet scaled down picks the pods it deletes itself, so the backend picks them first and tells it which:

1. **Choose.** The pods to remove (``choose_leaving``): ones already leaving, then unscheduled and not-ready ones
   (they serve nothing), then the youngest (the least warmed caches). Each is annotated ``frontdoor.dev/leaving-since``
   and ``controller.kubernetes.io/pod-deletion-cost: "-1000"``, so that the ReplicaSet deletes exactly those.
2. **Unroute.** The backend stops reporting their endpoints; the reconciler writes the revision's endpoints and the
   control plane publishes a snapshot without them. The Deployment keeps its replica count meanwhile.
3. **Scale.** Once no leaving pod's endpoint is routed in the tenant's section of the snapshot and every live
   gateway acknowledged that version (``controlplane.contracts.drain``), or once the drain timeout passed, the
   Deployment gets the lower count; each deleted pod's ``preStop`` then waits for what it still has in flight.

A scale back up before step 3 takes leaving pods back (their annotations are removed) before any new pod is made.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.contracts.drain import Ack, lagging_gateways

LEAVING_ANNOTATION = "frontdoor.dev/leaving-since"
DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
LEAVING_COST = "-1000"


def _annotations(pod: Mapping[str, Any]) -> Mapping[str, str]:
    return pod.get("metadata", {}).get("annotations") or {}


def leaving_since(pod: Mapping[str, Any]) -> float | None:
    raw = _annotations(pod).get(LEAVING_ANNOTATION)
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _ready(pod: Mapping[str, Any]) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return str(condition.get("status")) == "True"
    return False


def _removal_rank(pod: Mapping[str, Any]) -> tuple[int, int, int]:
    """Lower goes first: leaving already, unscheduled, not ready (ties: the newest, by the sort before this one)."""
    status = pod.get("status") or {}
    return (
        0 if leaving_since(pod) is not None else 1,
        0 if not (pod.get("spec") or {}).get("nodeName") and status.get("phase") == "Pending" else 1,
        0 if not _ready(pod) else 1,
    )


def _created(pod: Mapping[str, Any]) -> str:
    return str(pod.get("metadata", {}).get("creationTimestamp") or "")  # RFC 3339 in UTC: sorts as text


@dataclass(frozen=True)
class Plan:
    """What a pass does with a revision's pods: which to mark leaving, which to take back, which leave."""

    leaving: frozenset[str]  # every pod that is leaving after this pass
    mark: tuple[str, ...]  # pods to annotate as leaving now
    unmark: tuple[str, ...]  # pods to take back (a scale up came first)


def choose_leaving(pods: Iterable[Mapping[str, Any]], current: int, wanted: int) -> Plan:
    """The pods to remove so that ``current`` replicas become ``wanted`` (none when it does not go down)."""
    live = [p for p in pods if not p.get("metadata", {}).get("deletionTimestamp")]
    ranked = sorted(sorted(live, key=_created, reverse=True), key=_removal_rank)
    count = max(0, min(current - wanted, len(ranked)))
    chosen = [str(p["metadata"]["name"]) for p in ranked[:count]]
    already = {str(p["metadata"]["name"]) for p in live if leaving_since(p) is not None}
    return Plan(
        leaving=frozenset(chosen),
        mark=tuple(name for name in chosen if name not in already),
        unmark=tuple(sorted(already - set(chosen))),
    )


def leaving_patch(now: float | None) -> dict[str, Any]:
    """The merge patch that marks a pod leaving (``now``) or takes it back (None)."""
    if now is None:
        return {"metadata": {"annotations": {LEAVING_ANNOTATION: None, DELETION_COST_ANNOTATION: None}}}
    return {"metadata": {"annotations": {LEAVING_ANNOTATION: f"{now:.3f}", DELETION_COST_ANNOTATION: LEAVING_COST}}}


def unrouted(
    leaving_endpoints: Iterable[str],
    routed: frozenset[str],
    acks: Mapping[str, Ack],
    version: int,
    since: float,
    now: float,
    *,
    ack_timeout_s: float,
    drain_timeout_s: float,
) -> bool:
    """Whether the leaving pods may go: no gateway can still send them a request (their endpoints are not routed at
    ``version`` and every live gateway loaded it), or they have been leaving for ``drain_timeout_s``."""
    if now - since >= drain_timeout_s:
        return True
    if any(endpoint in routed for endpoint in leaving_endpoints):
        return False
    return not lagging_gateways(acks, version, since, now, ack_timeout_s)
