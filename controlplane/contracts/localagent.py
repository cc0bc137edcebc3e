"""The wire format between LocalBackend (in Celery workers) and the agent, both through Redis.

- ``<prefix>:local:desired`` — a HASH, field = deployment id, value = the desired document (JSON, below).
  A deletion is a tombstone ``{"id": 9, "deleted": true, ...}``; the agent removes the field (compare-and-delete)
  once the deployment's processes are gone.
- ``<prefix>:db<N>:local:notify`` — a PUBLISH channel (``notify_channel``; N is REDIS_URL's database, because
  pub/sub ignores databases); payload = the deployment id whose desired state changed.
  The agent also re-reads the whole hash every tick, so a lost notice costs at most a tick.
- ``<prefix>:local:status:<deployment id>`` — the observed status (JSON, below), rewritten every tick with a
  ``heartbeat``; it expires when no agent writes it.
- ``<prefix>:local:agent`` — the agent's own heartbeat: ``{"ts", "pid", "control_port"}``.
- ``<prefix>:queue:<deployment id>`` — requests waiting in the deployment's ready replicas' own queues (an integer,
  the sum of their ``vllm:num_requests_waiting``), for the autoscaler; absent when no replica reports the gauge.

Desired document::

    {"id": 9, "tenant": "acme", "name": "chat", "deleted": false, "written_at": 1764201600.0,
     "revisions": [{"id": 11, "number": 1, "replicas": 2, "weight": 100,
                    "spec": {"runtime": "builtin", "model": "frontdoor/sim-chat", "args": [], "env": {},
                             "gpu_type": "", "gpu_count": 0, "image": ""}}]}

Status document (a revision's entry is ``RevisionStatus.to_wire()``, ``controlplane/contracts/revision_status.py``)::

    {"heartbeat": 1764201601.0, "agent_pid": 123, "exists": true, "processes": 2,
     "revisions": {"11": {"desired_replicas": 2, "ready_replicas": 2,
                          "endpoints": ["http://127.0.0.1:40123", "http://127.0.0.1:40124"],
                          "waiting_for_capacity": null, "message": "2/2 ready"}}}
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from controlplane.contracts import redis_names
from controlplane.contracts.revision_status import RevisionStatus
from controlplane.contracts.sealing import context

# A status older than this means no agent is writing it.
HEARTBEAT_STALE_S = 10.0
STATUS_TTL_S = 300
AGENT_NOT_RUNNING = "local agent is not running"


# The protocol's keys and channel, spelled in redis_names; the agent and the backend name them through this module.
desired_key = redis_names.local_desired_key
notify_channel = redis_names.local_notify_channel
status_key = redis_names.local_status_key
agent_key = redis_names.local_agent_key
queue_key = redis_names.replica_queue_key

# Requests waiting in a deployment's replicas' own queues (vLLM's ``vllm:num_requests_waiting``, summed), rewritten
# every tick; short-lived so a stopped agent's figure soon stops counting. Read by the autoscale tick.
QUEUE_TTL_S = 5


# HDEL the field only when it still holds the value we processed, so a newer desired state is never lost.
COMPARE_AND_DELETE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


@dataclass(frozen=True)
class DesiredRevision:
    """One revision the agent should run ``replicas`` copies of."""

    id: int
    number: int
    replicas: int
    spec: dict[str, Any]
    # The variables the spec's ``secret_env`` names, their values sealed (``secret_env_context``); never in clear.
    sealed_env: dict[str, str] = field(default_factory=dict)

    @property
    def runtime(self) -> str:
        return str(self.spec.get("runtime") or "builtin")

    @property
    def model(self) -> str:
        return str(self.spec.get("model") or "")

    @property
    def gpu_type(self) -> str:
        return str(self.spec.get("gpu_type") or "")

    @property
    def gpu_count(self) -> int:
        return int(self.spec.get("gpu_count") or 0) if self.gpu_type else 0

    @property
    def spec_hash(self) -> str:
        """Identifies what a replica runs: an adopted replica must have been started from the same spec.

        Sealed values are deterministic, so they change only with the value: a rotated secret restarts the replica.
        """
        what: Any = {"spec": self.spec, "sealed_env": self.sealed_env} if self.sealed_env else self.spec
        return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def secret_env_context(tenant: str, deployment_id: int, variable: str) -> str:
    """What a replica's secret variable is sealed under: a value copied to another deployment does not open."""
    return context("replica-env", tenant, deployment_id, variable)


@dataclass(frozen=True)
class DesiredDeployment:
    id: int
    tenant: str
    name: str
    deleted: bool
    revisions: tuple[DesiredRevision, ...] = field(default_factory=tuple)


def parse_desired(raw: str | bytes) -> DesiredDeployment:
    """Parse a desired document; raises ValueError (or KeyError/TypeError) on a malformed one."""
    doc = json.loads(raw)
    revisions = tuple(
        DesiredRevision(
            id=int(rev["id"]),
            number=int(rev.get("number", 0)),
            replicas=max(0, int(rev["replicas"])),
            spec=dict(rev.get("spec") or {}),
            sealed_env={str(k): str(v) for k, v in (rev.get("sealed_env") or {}).items()},
        )
        for rev in doc.get("revisions") or []
    )
    deleted = bool(doc.get("deleted"))
    return DesiredDeployment(
        id=int(doc["id"]),
        tenant=str(doc.get("tenant", "")),
        name=str(doc.get("name", "")),
        deleted=deleted,
        revisions=() if deleted else revisions,
    )


@dataclass
class ObservedDeployment:
    """What the agent reports for a deployment: whether anything of it is left, its processes, its revisions."""

    exists: bool
    processes: int
    revisions: dict[int, RevisionStatus] = field(default_factory=dict)

    def to_json(self, heartbeat: float, agent_pid: int) -> str:
        return json.dumps(
            {
                "heartbeat": heartbeat,
                "agent_pid": agent_pid,
                "exists": self.exists,
                "processes": self.processes,
                "revisions": {str(rid): rev.to_wire() for rid, rev in sorted(self.revisions.items())},
            },
            sort_keys=True,
        )
