"""The reconciler on the local backend: ready deployments are revisited, observed counts mean what the docs say,
and conditions other writers set survive a pass; with a real agent short of GPU slots, its capacity message reaches
the REST API as ``WaitingForCapacity`` and clears once the deployment fits.

The local agent's side is mostly its Redis status document, written here the way the agent writes it
(``controlplane/contracts/localagent.py``), so each case controls exactly what the agent reports; the last case
runs the real agent process (``tests/localagent/test_agent.py``'s harness).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.contracts import localagent as protocol
from deployments import tasks
from deployments.backends import reset_backends
from deployments.backends.base import DeploymentSpec, DeploymentStatus
from deployments.backends.local import LocalBackend
from deployments.models import ModelDeployment, Revision
from deployments.reconcile import engine as reconcile

pytestmark = pytest.mark.django_db

PORT_A, PORT_B = "http://127.0.0.1:40001", "http://127.0.0.1:40002"


@pytest.fixture
def backend(redis_url: str, redis_prefix: str, settings: Any) -> Iterator[LocalBackend]:
    settings.FRONTDOOR_BACKEND = "local"
    reset_backends()  # get_backend() builds a LocalBackend on this test's prefix
    yield LocalBackend(redis_url=redis_url, prefix=redis_prefix)
    reset_backends()


def make_deployment(tenant: Any, weights: tuple[int, ...] = (100,), **fields: Any) -> ModelDeployment:
    deployment = ModelDeployment.unscoped_objects.create(
        tenant=tenant, name="chat", runtime="builtin", model="m", **{"desired_replicas": 1, **fields}
    )
    for number, weight in enumerate(weights, start=1):
        Revision.unscoped_objects.create(
            deployment=deployment, number=number, spec={**deployment.revision_spec(), "n": number}, weight=weight
        )
    return deployment


def revisions(deployment: ModelDeployment) -> list[Revision]:
    return list(Revision.unscoped_objects.filter(deployment=deployment).order_by("number"))


def agent_reports(
    backend: LocalBackend, deployment: ModelDeployment, observed: dict[int, tuple[int, list[str]]], *, age_s: float = 0
) -> None:
    """Write the agent's heartbeat and status document: revision number -> (ready replicas, endpoints)."""
    now = time.time() - age_s
    by_number = {r.number: r for r in revisions(deployment)}
    doc = {
        "heartbeat": now,
        "agent_pid": 1,
        "exists": True,
        "processes": sum(len(endpoints) for _, endpoints in observed.values()),
        "revisions": {
            str(by_number[number].pk): {
                "desired_replicas": by_number[number].desired_replicas or ready,
                "ready_replicas": ready,
                "endpoints": endpoints,
                "waiting_for_capacity": None,
                "message": f"{ready} ready",
            }
            for number, (ready, endpoints) in observed.items()
        },
    }
    backend.redis.set(protocol.status_key(backend.prefix, deployment.pk), json.dumps(doc))
    backend.redis.set(protocol.agent_key(backend.prefix), json.dumps({"ts": now, "pid": 1, "control_port": 0}))


def converge(deployment: ModelDeployment, backend: LocalBackend) -> reconcile.ReconcileResult:
    """Reconcile until the desired document is written and the agent's figures match the plan."""
    result = reconcile.reconcile_deployment(deployment.pk, backend)
    for r in revisions(deployment):
        if r.desired_replicas == 0:  # first pass: the plan is now stored; report with it
            return reconcile.reconcile_deployment(deployment.pk, backend)
    return result


def write_statements(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries if q["sql"].split()[0].upper() in {"INSERT", "UPDATE", "DELETE"}]


def condition(deployment: ModelDeployment, type_: str) -> dict[str, Any]:
    deployment.refresh_from_db()
    return next(c for c in deployment.conditions if c["type"] == type_)


def test_it_revisits_ready_deployments_and_follows_a_replica_to_its_new_port(
    acme: Any, backend: LocalBackend, broker: Any
) -> None:
    deployment = make_deployment(acme)
    agent_reports(backend, deployment, {1: (1, [PORT_A])})
    assert converge(deployment, backend).outcome == "converged"
    broker.clear()

    assert tasks.resync_all.apply().get()["deployments"] == 1
    assert broker.reconcile_ids() == [deployment.pk]

    agent_reports(backend, deployment, {1: (1, [PORT_B])})  # the replica restarted on another port
    assert tasks.reconcile_deployment.apply(args=[deployment.pk], kwargs={"follow_ups": 0}).get() == "converged"
    assert revisions(deployment)[0].endpoints == [PORT_B]


def test_it_writes_nothing_when_a_revisited_ready_deployment_has_not_changed(acme: Any, backend: LocalBackend) -> None:
    deployment = make_deployment(acme)
    agent_reports(backend, deployment, {1: (1, [PORT_A])})
    converge(deployment, backend)

    with CaptureQueriesContext(connection) as queries:
        result = reconcile.reconcile_deployment(deployment.pk, backend)

    assert (result.outcome, result.db_writes, result.api_writes) == ("converged", 0, 0)
    assert write_statements(queries) == []
    assert not any("FOR UPDATE" in q["sql"] for q in queries), "a no-op pass takes no row lock"


def test_it_stops_routing_to_the_replicas_of_a_dead_agent(acme: Any, backend: LocalBackend) -> None:
    deployment = make_deployment(acme)
    agent_reports(backend, deployment, {1: (1, [PORT_A])})
    converge(deployment, backend)

    agent_reports(backend, deployment, {1: (1, [PORT_A])}, age_s=protocol.HEARTBEAT_STALE_S + 5)
    result = reconcile.reconcile_deployment(deployment.pk, backend)

    assert result.outcome == "progressing"
    assert revisions(deployment)[0].endpoints == []
    deployment.refresh_from_db()
    assert (deployment.status, deployment.ready_replicas) == ("progressing", 0)
    assert condition(deployment, "Ready")["status"] == "False"


def test_it_is_not_ready_while_a_weighted_revision_has_no_ready_replica(acme: Any, backend: LocalBackend) -> None:
    deployment = make_deployment(acme, weights=(80, 20), min_replicas=1, max_replicas=1)
    reconcile.reconcile_deployment(deployment.pk, backend)
    agent_reports(backend, deployment, {1: (1, [PORT_A]), 2: (0, [])})

    result = reconcile.reconcile_deployment(deployment.pk, backend)

    deployment.refresh_from_db()
    assert result.outcome == "progressing"
    assert (deployment.status, deployment.ready_replicas) == ("progressing", 1)
    assert "r2: 0/1 ready" in condition(deployment, "Ready")["message"]
    assert condition(deployment, "Progressing")["status"] == "True"


def test_it_counts_the_ready_replicas_the_gateways_are_given(acme: Any, backend: LocalBackend) -> None:
    # A canary on a one-replica deployment runs one replica per weighted revision (the documented exception).
    deployment = make_deployment(acme, weights=(0, 80, 20), min_replicas=1, max_replicas=1)
    Revision.unscoped_objects.filter(deployment=deployment, number=1).update(desired_replicas=1, ready_replicas=1)
    reconcile.reconcile_deployment(deployment.pk, backend)
    # r1 (drained, weight 0) still runs, r2 reports more ready than planned (a scale-down in flight), r3 is ready.
    agent_reports(backend, deployment, {1: (1, [PORT_A]), 2: (2, [PORT_B, "http://127.0.0.1:40003"]), 3: (1, [PORT_A])})

    result = reconcile.reconcile_deployment(deployment.pk, backend)

    deployment.refresh_from_db()
    planned = {r.number: r.desired_replicas for r in revisions(deployment)}
    assert planned[2] == 1 and planned[3] == 1
    # r1 serves no traffic (weight 0); both of r2's endpoints are still in the routing table, so both count.
    assert deployment.ready_replicas == 2 + 1
    assert deployment.desired_replicas == 1  # the requested count stays what the API/autoscaler set
    # The surplus is a scale-down the agent has not reported yet: the pass keeps looking until its endpoint goes.
    assert result.outcome == "progressing"


def test_a_scale_down_stays_progressing_until_the_agent_stops_reporting_the_surplus_replica(
    acme: Any, backend: LocalBackend
) -> None:
    deployment = make_deployment(acme, desired_replicas=2, min_replicas=0, max_replicas=2)
    agent_reports(backend, deployment, {1: (2, [PORT_A, PORT_B])})
    assert converge(deployment, backend).outcome == "converged"
    ModelDeployment.unscoped_objects.filter(pk=deployment.pk).update(desired_replicas=1)

    # The pass that asks for one replica still sees two: both stay routed, and it keeps looking.
    assert reconcile.reconcile_deployment(deployment.pk, backend).outcome == "progressing"
    deployment.refresh_from_db()
    assert deployment.ready_replicas == 2 and revisions(deployment)[0].endpoints == [PORT_A, PORT_B]
    assert condition(deployment, "Progressing")["reason"] == "ScalingDown"

    agent_reports(backend, deployment, {1: (1, [PORT_A])})  # the agent drains the other one: no longer reported
    assert reconcile.reconcile_deployment(deployment.pk, backend).outcome == "converged"
    deployment.refresh_from_db()
    assert deployment.ready_replicas == 1 and revisions(deployment)[0].endpoints == [PORT_A]


class ConcurrentWriterBackend(LocalBackend):
    """A LocalBackend during whose apply another writer (the autoscaler) commits a condition of its own."""

    def apply_deployment(self, deployment: DeploymentSpec) -> DeploymentStatus:
        row = ModelDeployment.unscoped_objects.select_for_update().get(pk=deployment.id)
        row.set_condition("CappedByQuota", True, "QuotaExhausted", "the quota allows 1 replica")
        ModelDeployment.unscoped_objects.filter(pk=deployment.id).update(conditions=row.conditions)
        return super().apply_deployment(deployment)


def test_it_keeps_the_conditions_other_writers_set_during_a_pass(
    acme: Any, backend: LocalBackend, redis_url: str
) -> None:
    deployment = make_deployment(acme)
    ModelDeployment.unscoped_objects.filter(pk=deployment.pk).update(
        conditions=[{"type": "SLOBreached", "status": "True", "reason": "Latency", "message": "p95 900 ms"}]
    )
    agent_reports(backend, deployment, {1: (1, [PORT_A])})
    racing = ConcurrentWriterBackend(redis_url=redis_url, prefix=backend.prefix)

    result = reconcile.reconcile_deployment(deployment.pk, racing)

    assert result.db_writes > 0
    assert condition(deployment, "CappedByQuota")["status"] == "True"
    assert condition(deployment, "SLOBreached")["message"] == "p95 900 ms"
    assert condition(deployment, "Ready")["reason"] in {"AllReplicasReady", "ReplicasNotReady"}


# ---------------------------------------------------------------- WaitingForCapacity with a real local agent

from tests.support.localagent import agent_factory  # noqa: E402 - the real-agent fixture, used only below

API_DEPLOYMENT = "/api/v1/tenants/acme/deployments/gpu-chat/"


@pytest.fixture
def one_slot_agent(redis_url: str, redis_prefix: str, tmp_path: Any) -> Iterator[Any]:
    """A real ``python -m localagent`` with a single nvidia-h100 slot, on this test's Redis prefix."""
    with agent_factory(redis_url, redis_prefix, tmp_path) as make:
        yield make(FRONTDOOR_LOCAL_GPU_SLOTS='{"nvidia-h100": 1}')


def reconcile_until(
    deployment_id: int, backend: LocalBackend, done: Any, what: str, timeout_s: float = 45
) -> dict[str, Any]:
    """Reconcile every 0.3 s (as the follow-up passes would) until ``done(conditions)``; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        reconcile.reconcile_deployment(deployment_id, backend)
        found = {c["type"]: c for c in ModelDeployment.unscoped_objects.get(pk=deployment_id).conditions}
        if done(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; conditions: {found}")
        time.sleep(0.3)


def test_it_reports_the_agents_capacity_shortage_through_the_api_until_the_deployment_fits(
    acme: Any, backend: LocalBackend, one_slot_agent: Any, api: Any, adam: Any
) -> None:
    client = api(adam)
    created = client.post(
        "/api/v1/tenants/acme/deployments/",
        {
            "name": "gpu-chat",
            "runtime": "builtin",
            "model": "frontdoor/sim-chat",
            "gpu_type": "nvidia-h100",
            "gpu_count": 2,
            "min_replicas": 1,
            "max_replicas": 1,
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    deployment_id = ModelDeployment.unscoped_objects.get(tenant=acme, name="gpu-chat").pk

    reconcile_until(
        deployment_id,
        backend,
        lambda c: c.get("WaitingForCapacity", {}).get("status") == "True",
        "the agent's capacity message",
    )
    shown = {c["type"]: c for c in client.get(API_DEPLOYMENT).json()["conditions"]}
    waiting = shown["WaitingForCapacity"]
    assert (waiting["status"], waiting["reason"]) == ("True", "Unschedulable")
    assert "local backend has 1 free nvidia-h100 slots (needs 2)" in waiting["message"]
    assert shown["Ready"]["status"] == "False"

    # Ask for what the agent has: a new revision needing one GPU replaces the one that never started.
    changed = client.patch(API_DEPLOYMENT, {"gpu_count": 1}, format="json")
    assert changed.status_code == 200, changed.json()

    def fits(found: dict[str, Any]) -> bool:
        waiting = found.get("WaitingForCapacity", {}).get("status")
        return bool(waiting == "False" and found.get("Ready", {}).get("status") == "True")

    reconcile_until(deployment_id, backend, fits, "the capacity condition to clear")
    body = client.get(API_DEPLOYMENT).json()
    cleared = {c["type"]: c for c in body["conditions"]}
    assert (cleared["WaitingForCapacity"]["status"], cleared["WaitingForCapacity"]["reason"]) == (
        "False",
        "CapacityAvailable",
    )
    assert body["ready_replicas"] == 1
    events = client.get(API_DEPLOYMENT + "events/").json()
    reasons = [e["reason"] for e in (events["results"] if isinstance(events, dict) else events)]
    assert "WaitingForCapacity" in reasons
