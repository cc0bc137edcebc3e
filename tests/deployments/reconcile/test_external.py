"""External deployments on the local backend: served by their endpoint URLs, so they become ready whatever the agent
says about them, and the agent is never asked to run them.

The agent's side is its Redis status document, written here the way the agent writes it
(``controlplane/contracts/localagent.py``); for an external revision it reports what it would if asked to run one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from controlplane.contracts import localagent as protocol
from deployments.backends import reset_backends
from deployments.backends.local import LocalBackend
from deployments.models import ModelDeployment, Revision
from deployments.reconcile import engine as reconcile

pytestmark = pytest.mark.django_db

ENDPOINT = "http://127.0.0.1:40999/v1"  # never contacted: the reconciler only copies it
NO_LOCAL_PROCESSES = "runtime external has no local processes on the local backend"


@pytest.fixture
def backend(redis_url: str, redis_prefix: str, settings: Any) -> Iterator[LocalBackend]:
    settings.FRONTDOOR_BACKEND = "local"
    reset_backends()
    yield LocalBackend(redis_url=redis_url, prefix=redis_prefix)
    reset_backends()


def external_deployment(tenant: Any, **fields: Any) -> ModelDeployment:
    deployment = ModelDeployment.unscoped_objects.create(
        tenant=tenant, name="ext", runtime="external", model="gpt-x", endpoints=[ENDPOINT], desired_replicas=1,
        **fields,
    )
    Revision.unscoped_objects.create(deployment=deployment, number=1, spec=deployment.revision_spec(), weight=100)
    return deployment


def agent_reports(backend: LocalBackend, deployment: ModelDeployment, revisions: dict[int, dict[str, Any]]) -> None:
    """The agent's heartbeat and status document, revision id -> what it reports."""
    now = time.time()
    doc = {"heartbeat": now, "agent_pid": 1, "exists": True, "processes": 0,
           "revisions": {str(rid): seen for rid, seen in revisions.items()}}
    backend.redis.set(protocol.status_key(backend.prefix, deployment.pk), json.dumps(doc))
    backend.redis.set(protocol.agent_key(backend.prefix), json.dumps({"ts": now, "pid": 1, "control_port": 0}))


def unschedulable(desired: int = 1) -> dict[str, Any]:
    return {"desired_replicas": desired, "ready_replicas": 0, "endpoints": [],
            "waiting_for_capacity": NO_LOCAL_PROCESSES, "message": NO_LOCAL_PROCESSES}


def desired_revisions(backend: LocalBackend, deployment: ModelDeployment) -> list[int]:
    raw = backend.redis.hget(protocol.desired_key(backend.prefix), str(deployment.pk))
    assert raw is not None
    return [r["id"] for r in json.loads(raw)["revisions"]]


def conditions(deployment: ModelDeployment) -> dict[str, str]:
    deployment.refresh_from_db()
    return {c["type"]: c["status"] for c in deployment.conditions}


def test_an_external_deployment_is_ready_even_when_the_agent_reports_it_unschedulable(
    acme: Any, backend: LocalBackend
) -> None:
    deployment = external_deployment(acme)
    revision = Revision.unscoped_objects.get(deployment=deployment)
    agent_reports(backend, deployment, {revision.pk: unschedulable()})

    result = reconcile.reconcile_deployment(deployment.pk, backend)

    assert result.outcome == "converged"
    deployment.refresh_from_db()
    assert (deployment.status, deployment.ready_replicas) == (ModelDeployment.Status.READY, 1)
    assert conditions(deployment) == {
        "Ready": "True", "Progressing": "False", "Degraded": "False", "WaitingForCapacity": "False"
    }
    revision.refresh_from_db()
    assert (revision.endpoints, revision.ready_replicas) == ([ENDPOINT], 1)


def test_the_agent_is_never_asked_to_run_an_external_revision(acme: Any, backend: LocalBackend) -> None:
    deployment = external_deployment(acme)

    reconcile.reconcile_deployment(deployment.pk, backend)

    assert desired_revisions(backend, deployment) == []
    deployment.refresh_from_db()
    assert deployment.status == ModelDeployment.Status.READY


def test_an_external_deployment_with_more_replicas_than_endpoints_is_ready(acme: Any, backend: LocalBackend) -> None:
    deployment = external_deployment(acme, min_replicas=3, max_replicas=3)
    deployment.desired_replicas = 3
    deployment.save(update_fields=["desired_replicas"])

    assert reconcile.reconcile_deployment(deployment.pk, backend).outcome == "converged"
    deployment.refresh_from_db()
    assert deployment.status == ModelDeployment.Status.READY


def test_a_stopped_external_deployment_is_stopped(acme: Any, backend: LocalBackend) -> None:
    deployment = external_deployment(acme, desired_state=ModelDeployment.DesiredState.STOPPED)

    reconcile.reconcile_deployment(deployment.pk, backend)

    deployment.refresh_from_db()
    assert (deployment.status, deployment.ready_replicas) == (ModelDeployment.Status.STOPPED, 0)


def test_a_builtin_revision_is_drained_once_an_external_one_takes_the_traffic(acme: Any, backend: LocalBackend) -> None:
    deployment = ModelDeployment.unscoped_objects.create(
        tenant=acme, name="ext", runtime="builtin", model="m", desired_replicas=1
    )
    r1 = Revision.unscoped_objects.create(
        deployment=deployment, number=1, spec=deployment.revision_spec(), weight=0, desired_replicas=1,
        ready_replicas=1, endpoints=["http://127.0.0.1:40001"],
    )
    deployment.runtime, deployment.endpoints = "external", [ENDPOINT]
    deployment.save(update_fields=["runtime", "endpoints"])
    r2 = Revision.unscoped_objects.create(deployment=deployment, number=2, spec=deployment.revision_spec(), weight=100)
    agent_reports(backend, deployment, {
        r1.pk: {"desired_replicas": 1, "ready_replicas": 1, "endpoints": ["http://127.0.0.1:40001"],
                "waiting_for_capacity": None, "message": "1 ready"},
        r2.pk: unschedulable(),
    })

    assert reconcile.reconcile_deployment(deployment.pk, backend).outcome == "converged"

    assert desired_revisions(backend, deployment) == []  # r1 pruned, r2 never sent
    r2.refresh_from_db()
    assert r2.endpoints == [ENDPOINT]
