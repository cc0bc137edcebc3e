"""A replica the local agent no longer wants is stopped last: it leaves the reported endpoints at once, and its
process goes only when every live gateway has loaded a snapshot without it and its requests have finished, or when
a bound has passed (controlplane/contracts/drain.py).

Real agent and replica processes (``tests/support/localagent.py``). The snapshot is written here the way the
control plane stores it (``controlplane.contracts.snapshot``'s writer); gateways are either acknowledgements
written by the test (so it decides when one catches up) or real gateway processes, one of them paused with SIGSTOP.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from controlplane.contracts import drain
from controlplane.contracts.snapshot import (
    DeploymentDoc,
    Limits,
    RevisionDoc,
    TenantDoc,
    deployment_key,
    publish_document,
    tenant_section,
)
from localagent.config import AgentConfig
from localagent.drain import Drainer
from localagent.state import ReplicaRecord
from localagent.supervisor import Replica
from tests.support.gateway import World, start_gateway, stop
from tests.support.localagent import Agent, deployment_spec, pid_alive, wait_until

pytestmark = pytest.mark.timeout(120)


def routed_deployment(tenant: str, deployment_id: int, revision_id: int, endpoints: list[str]) -> DeploymentDoc:
    revision: RevisionDoc = {"id": revision_id, "name": "r1", "weight": 100, "endpoints": endpoints}
    return {
        "id": deployment_id,
        "tenant": tenant,
        "name": f"chat-{deployment_id}",
        "model": "frontdoor/sim-chat",
        "runtime": "builtin",
        "state": "running",
        "min_replicas": 0,
        "max_replicas": 1,
        "max_concurrent_requests": None,
        "timeout_s": 30,
        "created": 1764201600,
        "revisions": [revision],
    }


def publish_snapshot(
    client: redis.Redis, prefix: str, deployment_id: int, revision_id: int, endpoints: list[str]
) -> int:
    """Publish a snapshot routing the deployment's revision to ``endpoints``, as the control plane publishes one."""
    deployment = routed_deployment("acme", deployment_id, revision_id, endpoints)
    return publish_document(client, prefix, {}, {}, {deployment_key("acme", deployment["name"]): deployment})


class FakeGateway:
    """An acknowledgement refreshed every 0.2 s with whatever version the test says this gateway has loaded."""

    def __init__(self, client: redis.Redis, prefix: str, version: int) -> None:
        self.client, self.key, self.version = client, drain.acks_key(prefix), version
        self.id = "test-gateway"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.client.hset(self.key, self.id, drain.encode_ack(self.version, time.time()))
            self._stop.wait(0.2)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.hdel(self.key, self.id)


@pytest.fixture
def fake_gateway(
    make_agent: Callable[..., Agent], redis_url: str, redis_prefix: str
) -> Iterator[Callable[[int], FakeGateway]]:
    made: list[FakeGateway] = []
    client = redis.Redis.from_url(redis_url)

    def make(version: int) -> FakeGateway:
        made.append(FakeGateway(client, redis_prefix, version))
        return made[-1]

    yield make
    for gateway in made:
        gateway.close()
    client.close()


def draining(agent: Agent) -> list[dict[str, Any]]:
    return list(agent.control("/status").get("draining", []))


def one_replica(agent: Agent, deployment_id: int, **spec: Any) -> tuple[str, int]:
    """Start one replica of the deployment; (its endpoint, its pid)."""
    agent.backend.apply_deployment(deployment_spec(deployment_id, 1, **spec))
    revision_id = deployment_id * 10 + 1
    [endpoint] = wait_until(lambda: agent.ready_endpoints(deployment_id, revision_id, 1), what="a ready replica")
    [replica] = agent.replicas()
    return endpoint, int(replica["pid"])


def test_a_replica_no_longer_wanted_runs_until_every_gateway_has_loaded_a_snapshot_without_it(
    make_agent: Callable[..., Agent], fake_gateway: Callable[[int], FakeGateway], redis_prefix: str
) -> None:
    agent = make_agent()
    endpoint, pid = one_replica(agent, 6)
    client = agent.backend.redis
    first = publish_snapshot(client, redis_prefix, 6, 61, [endpoint])
    gateway = fake_gateway(first)

    agent.backend.apply_deployment(deployment_spec(6, 0))
    # It leaves the reported endpoints at once (so the next reconcile unpublishes it), and keeps running.
    wait_until(lambda: agent.ready_endpoints(6, 61, 0) == [] and draining(agent), what="the replica to drain")
    assert pid_alive(pid)
    assert "a snapshot without its endpoint" in draining(agent)[0]["waiting_for"]

    without = publish_snapshot(client, redis_prefix, 6, 61, [])
    wait_until(lambda: "gateway" in draining(agent)[0]["waiting_for"], what="the agent to wait for the gateway")
    assert pid_alive(pid), "stopped while a gateway may still route to it"
    assert gateway.id in draining(agent)[0]["waiting_for"]

    gateway.version = without  # the gateway loads the snapshot without the replica
    wait_until(lambda: not pid_alive(pid) and draining(agent) == [], what="the drained replica to stop")
    assert agent.marked_pids() == set()


def test_a_draining_replica_finishes_its_stream_before_it_is_stopped(make_agent: Callable[..., Agent]) -> None:
    agent = make_agent()
    # About 7 s of stream: longer than the agent's SIGTERM-to-SIGKILL grace, so only the drain can save it.
    endpoint, pid = one_replica(agent, 7, args=["--tokens-per-s", "3"])
    lines: list[str] = []
    started = threading.Event()

    def stream() -> None:
        host, port = endpoint.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        body = {
            "model": "frontdoor/sim-chat",
            "messages": [{"role": "user", "content": "go"}],
            "max_tokens": 20,
            "stream": True,
        }
        try:
            conn.request(
                "POST", "/v1/chat/completions", body=json.dumps(body), headers={"content-type": "application/json"}
            )
            response = conn.getresponse()
            while raw := response.readline():
                if raw.startswith(b"data: "):
                    lines.append(raw.decode().strip())
                    started.set()
        except (OSError, http.client.HTTPException) as exc:
            lines.append(f"error: {type(exc).__name__}")
        finally:
            started.set()
            conn.close()

    reader = threading.Thread(target=stream, daemon=True)
    reader.start()
    assert started.wait(15)

    # No snapshot and no gateway: nothing routes to it, so only its request in flight keeps it.
    agent.backend.apply_deployment(deployment_spec(7, 0))
    reader.join(60)
    assert lines and lines[-1] == "data: [DONE]", lines[-3:]
    wait_until(lambda: not pid_alive(pid), what="the drained replica to stop")


def test_a_draining_replica_wanted_again_goes_back_into_service(
    make_agent: Callable[..., Agent], fake_gateway: Callable[[int], FakeGateway], redis_prefix: str
) -> None:
    agent = make_agent()
    endpoint, pid = one_replica(agent, 8)
    fake_gateway(publish_snapshot(agent.backend.redis, redis_prefix, 8, 81, [endpoint]))
    agent.backend.apply_deployment(deployment_spec(8, 0))
    wait_until(lambda: draining(agent), what="the replica to drain")

    agent.backend.apply_deployment(deployment_spec(8, 1))  # a wake-up while it drains

    assert wait_until(lambda: agent.ready_endpoints(8, 81, 1), what="the replica back") == [endpoint]
    assert [r["pid"] for r in agent.replicas()] == [pid] and draining(agent) == []


def test_a_paused_gateway_keeps_a_replica_alive_until_its_acknowledgement_bound_expires(
    make_agent: Callable[..., Agent], redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    ack_timeout_s = 8.0
    agent = make_agent(FRONTDOOR_DRAIN_ACK_TIMEOUT_S=str(ack_timeout_s))
    endpoint, pid = one_replica(agent, 9)
    client = agent.backend.redis
    world = World(client, redis_prefix)
    tenant = world.tenant()
    world.deployment(tenant, "chat", revisions=[{"id": 91, "name": "r1", "weight": 100, "endpoints": [endpoint]}])
    live = start_gateway(tmp_path, redis_prefix, redis_url)
    paused = start_gateway(tmp_path, redis_prefix, redis_url)
    try:
        first = world.publish(live, paused)
        wait_until(lambda: len(drain.parse_acks(client.hgetall(drain.acks_key(redis_prefix)))) == 2, what="2 acks")
        os.kill(paused.proc.pid, signal.SIGSTOP)  # it loads no snapshot (and acknowledges none) from now on

        agent.backend.apply_deployment(deployment_spec(9, 0))
        wait_until(lambda: draining(agent), what="the replica to drain")
        world.deployments[f"{tenant}/chat"]["revisions"][0]["endpoints"] = []
        without = world.publish(live)
        acks = drain.parse_acks(client.hgetall(drain.acks_key(redis_prefix)))
        [stuck] = [gateway for gateway, ack in acks.items() if ack.version == first]
        assert acks[stuck].version < without

        # The live gateway has the snapshot without the replica; the paused one may still route to it.
        wait_until(lambda: stuck in draining(agent)[0]["waiting_for"], what="the agent to wait for the paused one")
        assert pid_alive(pid)

        wait_until(lambda: not pid_alive(pid), timeout=30, what="the bound to expire and the replica to stop")
        acks = drain.parse_acks(client.hgetall(drain.acks_key(redis_prefix)))
        assert acks[stuck].version == first, "stopped because of the bound, not an acknowledgement"
    finally:
        os.kill(paused.proc.pid, signal.SIGCONT)
        stop(paused.proc)
        stop(live.proc)


class HmgetSpy:
    """The section names every HMGET asked for, sorted, one list per call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.asked: list[list[str]] = []
        real = redis.client.Pipeline.hmget

        def hmget(pipe: redis.client.Pipeline, name: Any, keys: list[str], *args: Any) -> Any:
            self.asked.append(sorted(keys))
            return real(pipe, name, keys, *args)

        monkeypatch.setattr(redis.client.Pipeline, "hmget", hmget)


def test_the_drainer_reads_only_the_sections_whose_version_moved(
    redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis.Redis.from_url(redis_url)
    draining_endpoint, other = "http://127.0.0.1:40061", "http://127.0.0.1:40071"
    unlimited: Limits = {"requests_per_minute": None, "tokens_per_minute": None, "max_concurrent_requests": None}
    tenants: dict[str, TenantDoc] = {
        slug: {"id": tenant_id, "status": "active", "limits": unlimited}
        for slug, tenant_id in (("acme", 1), ("globex", 2))
    }

    def publish(acme_endpoints: list[str], globex_endpoints: list[str]) -> int:
        deployments = {
            "acme/chat-6": routed_deployment("acme", 6, 61, acme_endpoints),
            "globex/chat-7": routed_deployment("globex", 7, 71, globex_endpoints),
        }
        return publish_document(client, redis_prefix, {}, tenants, deployments)

    record = ReplicaRecord(
        key="d6-r61-0",
        deployment_id=6,
        revision_id=61,
        slot=0,
        spec_hash="spec",
        runtime="builtin",
        port=40061,
        pid=0,  # no process: nothing is signalled while a gateway lags
        start_time=0,
        cmdline=[],
    )
    drainer = Drainer(AgentConfig(redis_url=redis_url, prefix=redis_prefix, http_port=0), client)
    # A gateway still on version 0 (it keeps every replica waiting; the test watches what is read meanwhile).
    client.hset(drain.acks_key(redis_prefix), "lagging", drain.encode_ack(0, time.time()))
    spy = HmgetSpy(monkeypatch)

    def step() -> int | None:
        drainer.step({}, {}, lambda replica: None)
        [item] = drainer.status()
        return item["unrouted_version"]  # type: ignore[no-any-return]

    try:
        publish([draining_endpoint], [other])
        drainer.add(Replica(record=record, proc=None, started_at=0.0))
        assert step() is None and spy.asked == [[tenant_section(1), tenant_section(2)]]

        without = publish([], [other])
        assert step() == without and spy.asked[1:] == [[tenant_section(1)]], "globex's section did not change"

        publish([], [other, "http://127.0.0.1:40072"])
        assert step() == without and spy.asked[2:] == [[tenant_section(2)]]
        assert step() == without and len(spy.asked) == 3, "nothing read while the version stays"
    finally:
        client.close()
