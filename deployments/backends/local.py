"""The ``local`` backend: replicas are processes on this machine, owned by the local agent.

This class runs inside Celery workers. It never starts processes itself: it writes the desired state to Redis
and reads back the status the agent reports (``controlplane/contracts/localagent.py`` has the wire format), so a
worker never depends on the agent being up at the moment it reconciles.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis

from controlplane.contracts import localagent as protocol
from controlplane.contracts.revision_status import RevisionStatus
from controlplane.contracts.sealing import Sealer
from deployments.backends.base import (
    DeploymentSpec,
    DeploymentStatus,
    RevisionSpec,
    TenantSpec,
    TransientBackendError,
)

logger = logging.getLogger(__name__)

WAITING_FOR_AGENT = "waiting for the local agent to pick up the change"


def desired_document(deployment: DeploymentSpec, sealer: Sealer | None = None) -> dict[str, Any]:
    """The agent's view of a deployment. Deterministic (no timestamps, deterministic seals), so an unchanged spec
    writes nothing."""
    revisions = []
    for rev in sorted(deployment.revisions, key=lambda r: r.id):
        if not rev.runs_replicas:
            continue
        doc: dict[str, Any] = {
            "id": rev.id,
            "number": rev.number,
            "replicas": rev.replicas,
            "weight": rev.weight,
            "spec": rev.spec,
        }
        if sealed := sealed_env(deployment, rev, sealer):
            doc["sealed_env"] = sealed
        revisions.append(doc)
    return {
        "id": deployment.id,
        "tenant": deployment.tenant.slug,
        "name": deployment.name,
        "deleted": False,
        "revisions": revisions,
    }


def sealed_env(deployment: DeploymentSpec, rev: RevisionSpec, sealer: Sealer | None) -> dict[str, str]:
    """The revision's secret variables, sealed for the agent: a secret value never reaches Redis in clear.

    Without a seal key (which the API refuses such deployments for) or a secret (deleted under a running revision,
    which the API refuses too), a variable is left out, and the replica starts without it.
    """
    sealed: dict[str, str] = {}
    for variable, name in sorted((rev.spec.get("secret_env") or {}).items()):
        secret = deployment.tenant.secret(str(name))
        if sealer is None or secret is None:
            logger.warning("deployment %s: %s is left out (no seal key or no secret %r)", deployment.id, variable, name)
            continue
        context = protocol.secret_env_context(deployment.tenant.slug, deployment.id, str(variable))
        sealed[str(variable)] = sealer.seal(secret.value, context, deterministic=True)
    return sealed


def tombstone_document(tenant_slug: str, deployment_id: int, name: str) -> dict[str, Any]:
    return {"id": deployment_id, "tenant": tenant_slug, "name": name, "deleted": True, "revisions": []}


class LocalBackend:
    """The backend contract over Redis (see base.Backend); ``LocalBackend()`` reads REDIS_URL and the prefix."""

    name = "local"

    def __init__(self, redis_url: str | None = None, prefix: str | None = None, seal_key: str | None = None) -> None:
        if redis_url is None or prefix is None or seal_key is None:
            from django.conf import settings

            redis_url = redis_url or settings.REDIS_URL
            prefix = prefix or settings.FRONTDOOR_REDIS_PREFIX
            seal_key = settings.FRONTDOOR_SEAL_KEY if seal_key is None else seal_key
        self.sealer = Sealer.from_text(seal_key) if seal_key else None
        self.prefix = prefix
        self.notify_channel = protocol.notify_channel(prefix, redis_url)
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)

    # ---- the contract -------------------------------------------------------------------------------------
    def apply_tenant(self, tenant: TenantSpec) -> None:
        """Nothing to do: local processes have no namespace; quotas are enforced by the control plane."""

    def apply_deployment(self, deployment: DeploymentSpec) -> DeploymentStatus:
        # One round trip reads the stored desired document, the status and the heartbeat together, so a pass over
        # an unchanged deployment (every resync revisits ready ones) costs one Redis read and no write.
        raw = json.dumps(desired_document(deployment, self.sealer), sort_keys=True)
        current, raw_status, raw_agent = self._read(deployment.id, with_desired=True)
        writes = 0
        if current is None or current.decode() != raw:
            self._write(deployment.id, raw)
            writes = 1
        status = self._status_from(deployment, *_decode(raw_status, raw_agent))
        status.writes += writes
        status.api_calls += 1 + 2 * writes
        return status

    def delete_deployment(self, tenant_slug: str, deployment_id: int, name: str) -> DeploymentStatus:
        writes = self._write_desired(deployment_id, tombstone_document(tenant_slug, deployment_id, name))
        doc, agent_alive = self._fetch(deployment_id)
        # A stopped agent cannot be asked; the tombstone stays and the agent stops the processes when it starts
        # (it never keeps processes that are not desired), so the deployment is gone as far as we can tell.
        exists = bool(agent_alive and doc is not None and doc.get("processes", 0))
        return DeploymentStatus(exists=exists, api_calls=2 + 2 * writes, writes=writes)

    def observe_deployment(self, deployment: DeploymentSpec) -> DeploymentStatus:
        return self._read_status(deployment)

    # ---- Redis ----------------------------------------------------------------------------------------------
    def _write_desired(self, deployment_id: int, doc: dict[str, Any]) -> int:
        """HSET + PUBLISH when the stored document differs; returns the number of writes (0 or 1)."""
        raw = json.dumps(doc, sort_keys=True)
        try:
            current = self.redis.hget(protocol.desired_key(self.prefix), str(deployment_id))
        except redis.RedisError as exc:
            raise TransientBackendError(f"cannot read desired state from Redis: {exc}") from exc
        if current is not None and current.decode() == raw:
            return 0
        self._write(deployment_id, raw)
        return 1

    def _write(self, deployment_id: int, raw: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(protocol.desired_key(self.prefix), str(deployment_id), raw)
        pipe.publish(self.notify_channel, str(deployment_id))
        try:
            pipe.execute()
        except redis.RedisError as exc:
            raise TransientBackendError(f"cannot write desired state to Redis: {exc}") from exc

    def _read(self, deployment_id: int, *, with_desired: bool = False) -> tuple[bytes | None, Any, Any]:
        """(stored desired document or None, raw status, raw heartbeat) in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        if with_desired:
            pipe.hget(protocol.desired_key(self.prefix), str(deployment_id))
        pipe.mget([protocol.status_key(self.prefix, deployment_id), protocol.agent_key(self.prefix)])
        try:
            replies = pipe.execute()
        except redis.RedisError as exc:
            raise TransientBackendError(f"cannot read local agent status from Redis: {exc}") from exc
        current = replies[0] if with_desired else None
        raw_status, raw_agent = replies[-1]
        return current, raw_status, raw_agent

    def _fetch(self, deployment_id: int) -> tuple[dict[str, Any] | None, bool]:
        """The agent's status document for the deployment (None when absent) and whether the agent is alive."""
        _, raw_status, raw_agent = self._read(deployment_id)
        return _decode(raw_status, raw_agent)

    def _read_status(self, deployment: DeploymentSpec) -> DeploymentStatus:
        return self._status_from(deployment, *self._fetch(deployment.id))

    def _status_from(
        self, deployment: DeploymentSpec, doc: dict[str, Any] | None, agent_alive: bool
    ) -> DeploymentStatus:
        status = DeploymentStatus(exists=True, api_calls=1)
        reported: dict[str, Any] = (doc or {}).get("revisions", {}) if agent_alive else {}
        for rev in deployment.revisions:
            if not rev.runs_replicas:
                continue  # the reconciler takes an external revision's endpoints from the deployment
            seen = reported.get(str(rev.id))
            if not agent_alive:
                status.revisions[rev.id] = RevisionStatus(
                    revision_id=rev.id, desired_replicas=rev.replicas, message=protocol.AGENT_NOT_RUNNING
                )
            elif seen is None:
                status.revisions[rev.id] = RevisionStatus(
                    revision_id=rev.id, desired_replicas=rev.replicas, message=WAITING_FOR_AGENT
                )
            else:
                observed = RevisionStatus.from_wire(rev.id, seen)
                if observed.desired_replicas != rev.replicas:
                    # A scale the agent has not seen yet: keep serving from the replicas it reports meanwhile.
                    observed.desired_replicas = rev.replicas
                    observed.message = WAITING_FOR_AGENT
                status.revisions[rev.id] = observed
        # Revisions being pruned still show while their processes stop.
        for rid, seen in reported.items():
            if int(rid) not in status.revisions:
                status.revisions[int(rid)] = RevisionStatus.from_wire(int(rid), seen)
        return status


def _decode(raw_status: Any, raw_agent: Any) -> tuple[dict[str, Any] | None, bool]:
    """The status document (None when absent) and whether the agent is alive (fresh heartbeat and status)."""
    now = time.time()
    doc = json.loads(raw_status) if raw_status else None
    agent = json.loads(raw_agent) if raw_agent else None
    agent_alive = agent is not None and now - float(agent.get("ts", 0)) <= protocol.HEARTBEAT_STALE_S
    if doc is not None and now - float(doc.get("heartbeat", 0)) > protocol.HEARTBEAT_STALE_S:
        agent_alive = False
    return doc, agent_alive
