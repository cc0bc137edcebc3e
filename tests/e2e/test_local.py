"""Acceptance: the whole platform on the local backend, driven through the REST API, with real processes.

- the web API: pytest-django's ``live_server`` (real HTTP, the transactional test database);
- a real Celery worker subprocess with an embedded beat (``--pool=solo -B``) on the test database and this test's
  Redis database and prefix; it reconciles, republishes the gateway's snapshot and runs the periodic ticks;
- the local agent (``python -m localagent``, own state dir) running real model-server replicas;
- the gateway (``python -m gateway``), called with the official ``openai`` client.

Create a deployment → its replica becomes ready → a completion through the gateway → a spec change with a 20 %
canary → both revisions serve (the usage events name the revision each request went to) → DELETE → the replica
processes are gone, the gateway answers 404 ``model_not_found`` and the row is deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest

from deployments.models import ModelDeployment, Revision
from tests.support.localagent import pid_alive
from tests.support.platform import DEPLOYMENT, Platform, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

def test_it_deploys_serves_canaries_and_deletes_through_the_rest_api(platform: Platform) -> None:
    p = platform
    logs = p.worker.log

    # Create: 201, and the reconciler brings its replica up.
    created = p.api.post(
        "/deployments/",
        {"name": DEPLOYMENT, "runtime": "builtin", "model": "frontdoor/sim-chat", "min_replicas": 1, "max_replicas": 1},
    )
    assert created.status_code == 201, created.text
    deployment_id = int(created.json()["id"])
    def ready_with(replicas: int) -> Callable[[], dict[str, Any] | None]:
        def probe() -> dict[str, Any] | None:
            found = p.deployment()
            return found if found and found["status"] == "ready" and found["ready_replicas"] == replicas else None

        return probe

    ready = wait_for(ready_with(1), 45, "the deployment to be ready", logs)
    assert ready["observed_generation"] == ready["generation"]
    assert {c["type"]: c["status"] for c in ready["conditions"]}["Ready"] == "True"

    # A completion through the gateway with the official client (the snapshot may trail the API by a second).
    def completes() -> str | None:
        try:
            return p.complete() or "(empty)"
        except openai.APIError:
            return None

    assert wait_for(completes, 15, "a completion through the gateway", logs)

    # A spec change with a 20 % canary: r2 takes 20 %, r1 keeps 80 %, and both get replicas.
    patched = p.api.patch(
        f"/deployments/{DEPLOYMENT}/", {"args": ["--stall-ms", "1"], "rollout": {"canary_weight": 20}}
    )
    assert patched.status_code == 200, patched.text
    def both_serving() -> list[dict[str, Any]] | None:
        found = p.revisions()
        return found if len(found) == 2 and all(r["endpoints"] for r in found) else None

    revisions = wait_for(both_serving, 45, "both revisions to have a ready replica", logs)
    assert sorted((r["number"], r["weight"]) for r in revisions) == [(1, 80), (2, 20)]
    # Ready counts the replicas taking traffic: one per weighted revision (a canary may exceed max_replicas).
    canary = wait_for(ready_with(2), 20, "the canary to be ready", logs)
    assert canary["desired_replicas"] == 1

    # Both revisions serve: bounded traffic until the usage events name both (0.8^60 odds of missing r2).
    revision_ids = set(Revision.unscoped_objects.filter(deployment_id=deployment_id).values_list("pk", flat=True))
    for _ in range(60):
        p.complete()
        if p.served_revisions(deployment_id) == revision_ids:
            break
    assert wait_for(lambda: p.served_revisions(deployment_id) == revision_ids, 5, "usage events", logs)

    # Delete: 202, then the replicas stop, the model leaves the gateway and the row goes.
    pids = p.replica_pids(deployment_id)
    assert len(pids) == 2  # one replica per revision
    deleted = p.api.delete(f"/deployments/{DEPLOYMENT}/")
    assert deleted.status_code == 202, deleted.text
    wait_for(lambda: p.deployment() is None, 45, "the deployment row to be deleted", logs)
    assert not ModelDeployment.unscoped_objects.filter(pk=deployment_id).exists()
    assert not Revision.unscoped_objects.filter(deployment_id=deployment_id).exists()
    wait_for(lambda: not any(pid_alive(pid) for pid in pids), 15, "the replica processes to exit", logs)
    assert p.replica_pids(deployment_id) == set()

    def gone_from_gateway() -> bool:
        try:
            p.complete()
        except openai.NotFoundError as exc:
            return exc.code == "model_not_found"
        return False

    assert wait_for(gone_from_gateway, 10, "the gateway to answer 404 model_not_found", logs)
