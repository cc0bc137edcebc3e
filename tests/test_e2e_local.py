"""Acceptance (issue 4): the whole platform on the local backend, driven through the REST API, with real processes.

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

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import openai
import pytest
import redis
from django.conf import settings

from deployments.models import ModelDeployment, Revision
from tenants.models import ApiKey, Tenant
from tests.browser.conftest import Worker
from tests.gateway.conftest import start_gateway, stop
from tests.test_localagent import Agent, agent_factory, pid_alive

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

T = TypeVar("T")
DEPLOYMENT = "chat"


def wait_for(probe: Callable[[], T | None], timeout_s: float, what: str, logs: Callable[[], str]) -> T:
    """Poll ``probe`` every 0.25 s until it returns something truthy; fail with the worker's log tail after that."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n--- worker log ---\n{logs()}")


@dataclass
class Reply:
    status_code: int
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


@dataclass
class RestClient:
    """A JSON client for the REST API over real HTTP, authenticated with an API key."""

    base_url: str
    key: str

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Reply:
        assert self.base_url.startswith("http://")
        request = urllib.request.Request(  # noqa: S310 - loopback http only (asserted above)
            self.base_url + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
                return Reply(response.status, response.read().decode())
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, exc.read().decode())

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post(self, path: str, body: dict[str, Any]) -> Reply:
        return self.request("POST", path, body)

    def patch(self, path: str, body: dict[str, Any]) -> Reply:
        return self.request("PATCH", path, body)

    def delete(self, path: str) -> Reply:
        return self.request("DELETE", path)


@dataclass
class Platform:
    api: RestClient  # the REST API, authenticated with a key of scope "manage"
    gateway: openai.OpenAI  # the gateway, with a key of scope "inference"
    agent: Agent
    worker: Worker
    redis: redis.Redis
    prefix: str

    def deployment(self) -> dict[str, Any] | None:
        response = self.api.get(f"/deployments/{DEPLOYMENT}/")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        return dict(response.json())

    def revisions(self) -> list[dict[str, Any]]:
        response = self.api.get(f"/deployments/{DEPLOYMENT}/revisions/")
        assert response.status_code == 200, response.text
        body = response.json()
        return list(body["results"] if isinstance(body, dict) else body)

    def complete(self) -> str:
        answer = self.gateway.chat.completions.create(
            model=DEPLOYMENT, messages=[{"role": "user", "content": "hello"}], max_tokens=4
        )
        return answer.choices[0].message.content or ""

    def served_revisions(self, deployment_id: int) -> set[int]:
        """Revision ids in the gateway's usage events for the deployment (docs/contracts.md, "Usage events")."""
        seen: set[int] = set()
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], self.redis.xrange(f"{self.prefix}:usage"))
        for _id, fields in entries:
            if fields.get(b"deployment") == str(deployment_id).encode() and fields.get(b"revision"):
                seen.add(int(fields[b"revision"]))
        return seen

    def replica_pids(self, deployment_id: int) -> set[int]:
        return {r["pid"] for r in self.agent.replicas() if str(r["key"]).startswith(f"d{deployment_id}-")}


@pytest.fixture
def platform(
    live_server: Any, acme: Tenant, redis_url: str, redis_prefix: str, tmp_path: Path
) -> Iterator[Platform]:
    tenant = acme
    _, manage_key = ApiKey.issue(tenant=tenant, name="automation", scopes=["manage"])
    _, inference_key = ApiKey.issue(tenant=tenant, name="app", scopes=["inference"])
    # Everything started is stopped even when a later start fails: the exit stack first (gateway, then worker),
    # then agent_factory stops the agent and asserts that none of its replicas survived.
    with agent_factory(redis_url, redis_prefix, tmp_path) as make_agent, contextlib.ExitStack() as started:
        client = redis.Redis.from_url(redis_url)
        started.callback(client.close)
        agent = make_agent()
        agent_env = {k: v for k, v in agent.env.items() if k.startswith("FRONTDOOR_LOCAL_")}
        worker = Worker(tmp_path, redis_prefix, {**agent_env, "FRONTDOOR_RESYNC_SECONDS": "5"})
        started.callback(worker.stop)
        gateway = start_gateway(tmp_path, redis_prefix, redis_url, FRONTDOOR_KEY_PEPPER=settings.FRONTDOOR_KEY_PEPPER)
        started.callback(stop, gateway.proc)
        api = RestClient(f"{live_server.url}/api/v1/tenants/acme", manage_key)
        completions = openai.OpenAI(base_url=gateway.url + "/v1", api_key=inference_key, max_retries=0, timeout=15)
        yield Platform(api, completions, agent, worker, client, redis_prefix)


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
