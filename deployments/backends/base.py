"""The contract between the reconciler and a backend.

The reconciler (``deployments/reconcile/engine.py``) computes the desired state from Postgres and hands it to a backend
as plain data (no ORM objects cross this line, so backends never touch the database). A backend applies it
idempotently (level-triggered: calling ``apply`` twice with the same desired state changes nothing the second
time) and reports what it observes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from controlplane.contracts.revision_status import RevisionStatus


class TransientBackendError(Exception):
    """Worth retrying with backoff: connection errors, 409 conflicts, 429, 5xx."""


class PermanentBackendError(Exception):
    """Retrying will not help (e.g. a 422 from the API server); the message is shown to the tenant."""


@dataclass(frozen=True)
class SecretValue:
    """One of the tenant's secrets, opened for the backend: a value for ``secret_env`` or a registry login.

    The value is left out of ``repr`` so that a logged spec never carries it.
    """

    name: str
    kind: str  # "generic" or "registry"
    version: int
    value: str = field(repr=False)
    registry_server: str = ""
    registry_username: str = ""


@dataclass(frozen=True)
class TenantSpec:
    """What a backend needs to know about a tenant (namespace, quota, isolation, secrets)."""

    slug: str
    gpus: dict[str, int]
    max_replicas: int
    cpu_cores: int
    memory_gib: int
    secrets: tuple[SecretValue, ...] = ()
    id: int = 0  # names the tenant's section of the gateway snapshot

    def secret(self, name: str) -> SecretValue | None:
        return next((s for s in self.secrets if s.name == name and s.kind == "generic"), None)


@dataclass(frozen=True)
class RevisionSpec:
    """One revision to run: its frozen spec, how many replicas, and its traffic weight."""

    id: int
    number: int
    spec: dict[str, Any]  # runtime, model, image, args, env, gpu_type, gpu_count
    replicas: int
    weight: int

    @property
    def runs_replicas(self) -> bool:
        """False for runtime ``external``: its endpoint URLs serve it, so a backend has nothing to run or create."""
        return str(self.spec.get("runtime", "builtin")) != "external"


@dataclass(frozen=True)
class DeploymentSpec:
    """A deployment's desired state. ``revisions`` lists every revision that should exist (others are pruned)."""

    id: int
    tenant: TenantSpec
    name: str
    autoscaler_class: str
    min_replicas: int
    max_replicas: int
    target_concurrency: int
    revisions: tuple[RevisionSpec, ...]
    created_at: float = 0.0
    # The longest a request may run (the deployment's ``timeout_s``): a replica being stopped is given that long to
    # finish what it serves.
    request_timeout_s: int = 120


@dataclass
class DeploymentStatus:
    """What a backend observes for a deployment; ``exists`` is False once every object is gone.

    ``revisions`` holds a ``RevisionStatus`` per revision id: the type the local agent reports too, so it is owned by
    ``controlplane/contracts/revision_status.py``.
    """

    exists: bool
    revisions: dict[int, RevisionStatus] = field(default_factory=dict)
    api_calls: int = 0
    writes: int = 0


class Backend(Protocol):
    name: str

    def apply_tenant(self, tenant: TenantSpec) -> None:
        """Create or update the tenant's shared objects (namespace, quota, network policy)."""

    def apply_deployment(self, deployment: DeploymentSpec) -> DeploymentStatus:
        """Make the backend match ``deployment``; prune revisions not listed; return what is observed now."""

    def delete_deployment(self, tenant_slug: str, deployment_id: int, name: str) -> DeploymentStatus:
        """Remove every object of the deployment; ``exists`` in the result says whether some are still there."""

    def observe_deployment(self, deployment: DeploymentSpec) -> DeploymentStatus:
        """Read the current state without changing anything."""
