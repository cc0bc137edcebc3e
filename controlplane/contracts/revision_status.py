"""What a backend observes for one revision: replicas wanted and ready, their endpoints, why some cannot be placed.

One type for every side that reports or reads it: the Kubernetes backend builds it from Deployment objects and
Pending pods; the local agent builds it from its processes and writes it into its status document
(``<prefix>:local:status:<deployment id>``, see ``controlplane/contracts/localagent.py``), which the local backend
reads back into it; the reconciler copies it onto ``Revision`` rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RevisionStatus:
    """One revision as a backend sees it now."""

    revision_id: int
    desired_replicas: int = 0
    ready_replicas: int = 0
    endpoints: list[str] = field(default_factory=list)
    # Set when replicas cannot be placed (pods Pending for GPUs, local GPU slots exhausted): the scheduler's words.
    waiting_for_capacity: str | None = None
    message: str = ""
    # Set when replicas fail to come up (an image that cannot be pulled, a crash loop, an OOM kill, a quota the
    # cluster refuses pods for ...): the cluster's reason (``ImagePullBackOff``) and the pod's message.
    failure_reason: str = ""
    failure_message: str = ""
    # Replicas kept while they leave the gateways' routing before a scale-down removes them (Kubernetes).
    leaving: int = 0

    def to_wire(self) -> dict[str, Any]:
        """Its entry in the agent's status document; the document keys entries by revision id, so the id is left out."""
        entry: dict[str, Any] = {
            "desired_replicas": self.desired_replicas,
            "ready_replicas": self.ready_replicas,
            "endpoints": list(self.endpoints),
            "waiting_for_capacity": self.waiting_for_capacity,
            "message": self.message,
        }
        if self.failure_reason:  # only a failure adds these (the agent reports none today)
            entry.update(failure_reason=self.failure_reason, failure_message=self.failure_message)
        return entry

    @classmethod
    def from_wire(cls, revision_id: int, entry: dict[str, Any]) -> RevisionStatus:
        """Read an entry of the agent's status document; a field it lacks takes its default."""
        return cls(
            revision_id=revision_id,
            desired_replicas=int(entry.get("desired_replicas", 0)),
            ready_replicas=int(entry.get("ready_replicas", 0)),
            endpoints=[str(e) for e in entry.get("endpoints", [])],
            waiting_for_capacity=entry.get("waiting_for_capacity"),
            message=str(entry.get("message", "")),
            failure_reason=str(entry.get("failure_reason") or ""),
            failure_message=str(entry.get("failure_message") or ""),
        )
