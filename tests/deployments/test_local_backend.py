"""LocalBackend: the backend contract over Redis, against a real agent process where one is needed."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from controlplane.contracts import localagent as protocol
from controlplane.contracts.revision_status import RevisionStatus
from deployments.backends.local import WAITING_FOR_AGENT, LocalBackend
from tests.support.localagent import Agent, agent_factory, deployment_spec, wait_until


@pytest.fixture
def make_agent(redis_url: str, redis_prefix: str, tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    with agent_factory(redis_url, redis_prefix, tmp_path) as make:
        yield make


def test_it_writes_the_desired_state_once_and_a_repeat_writes_nothing(redis_url: str, redis_prefix: str) -> None:
    backend = LocalBackend(redis_url=redis_url, prefix=redis_prefix)
    listener = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(protocol.notify_channel(redis_prefix, redis_url))

    first = backend.apply_deployment(deployment_spec(1, 2))
    second = backend.apply_deployment(deployment_spec(1, 2))

    assert (first.writes, second.writes) == (1, 0)
    stored = json.loads(backend.redis.hget(protocol.desired_key(redis_prefix), "1"))  # type: ignore[arg-type]
    assert [(r["id"], r["replicas"]) for r in stored["revisions"]] == [(11, 2)]
    notice = wait_until(lambda: listener.get_message(timeout=0.1), what="a notice")
    assert notice["data"] == b"1"
    listener.close()


def test_it_reports_no_ready_replicas_when_no_agent_runs(redis_url: str, redis_prefix: str) -> None:
    backend = LocalBackend(redis_url=redis_url, prefix=redis_prefix)

    status = backend.apply_deployment(deployment_spec(2, 1))

    assert status.exists
    assert status.revisions[21].ready_replicas == 0
    assert status.revisions[21].desired_replicas == 1
    assert status.revisions[21].message == protocol.AGENT_NOT_RUNNING


def test_it_treats_a_stale_heartbeat_as_no_agent(redis_url: str, redis_prefix: str) -> None:
    backend = LocalBackend(redis_url=redis_url, prefix=redis_prefix)
    stale = time.time() - protocol.HEARTBEAT_STALE_S - 5
    backend.redis.set(protocol.agent_key(redis_prefix), json.dumps({"ts": stale, "pid": 1}))
    doc = {
        "heartbeat": stale,
        "exists": True,
        "processes": 1,
        "revisions": {
            "31": {
                "desired_replicas": 1,
                "ready_replicas": 1,
                "endpoints": ["http://127.0.0.1:9"],
                "message": "1/1 ready",
            }
        },
    }
    backend.redis.set(protocol.status_key(redis_prefix, 3), json.dumps(doc))

    status = backend.observe_deployment(deployment_spec(3, 1))

    assert status.revisions[31].ready_replicas == 0
    assert status.revisions[31].endpoints == []
    assert status.revisions[31].message == "local agent is not running"


def test_it_reads_back_the_revision_status_the_agent_writes(redis_url: str, redis_prefix: str) -> None:
    backend = LocalBackend(redis_url=redis_url, prefix=redis_prefix)
    now = time.time()
    written = RevisionStatus(41, 2, 1, ["http://127.0.0.1:9"], "no free nvidia-h100 slot", "1/2 ready")
    pruned = RevisionStatus(40, 0, 1, ["http://127.0.0.1:8"], None, "1/0 ready")
    observed = protocol.ObservedDeployment(exists=True, processes=2, revisions={40: pruned, 41: written})
    backend.redis.set(protocol.agent_key(redis_prefix), json.dumps({"ts": now, "pid": 1}))
    backend.redis.set(protocol.status_key(redis_prefix, 4), observed.to_json(now, 1))

    status = backend.observe_deployment(deployment_spec(4, 2))

    assert status.revisions == {41: written, 40: pruned}  # a revision being pruned shows while its replica stops


def test_it_reports_a_deletion_done_when_no_agent_runs_and_keeps_the_tombstone(
    redis_url: str, redis_prefix: str
) -> None:
    backend = LocalBackend(redis_url=redis_url, prefix=redis_prefix)
    backend.apply_deployment(deployment_spec(4, 1))

    status = backend.delete_deployment("acme", 4, "chat-4")

    assert not status.exists
    tombstone = json.loads(backend.redis.hget(protocol.desired_key(redis_prefix), "4"))  # type: ignore[arg-type]
    assert tombstone["deleted"] is True


def test_it_reports_ready_endpoints_then_deletes_through_a_running_agent(make_agent: Callable[..., Agent]) -> None:
    agent = make_agent()
    backend = agent.backend
    spec = deployment_spec(5, 1)

    first = backend.apply_deployment(spec)
    assert first.exists
    assert first.revisions[51].desired_replicas == 1

    def ready_endpoints() -> list[str]:
        return backend.observe_deployment(spec).revisions[51].endpoints

    (endpoint,) = wait_until(ready_endpoints, what="a ready endpoint")
    assert endpoint.startswith("http://127.0.0.1:")

    assert backend.delete_deployment("acme", 5, "chat-5").exists
    wait_until(lambda: not backend.delete_deployment("acme", 5, "chat-5").exists, what="the processes to be gone")
    assert agent.replicas() == []


def test_it_keeps_serving_endpoints_while_the_agent_catches_up_with_a_scale_up(
    make_agent: Callable[..., Agent],
) -> None:
    agent = make_agent()
    backend = agent.backend
    backend.apply_deployment(deployment_spec(6, 1))
    wait_until(lambda: agent.ready_endpoints(6, 61, 1), what="one ready replica")
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGSTOP)  # the agent cannot pick up the change until it is continued
    try:
        status = backend.apply_deployment(deployment_spec(6, 2))
    finally:
        agent.proc.send_signal(signal.SIGCONT)

    assert status.revisions[61].desired_replicas == 2
    assert status.revisions[61].ready_replicas == 1
    assert len(status.revisions[61].endpoints) == 1
    assert status.revisions[61].message == WAITING_FOR_AGENT
    wait_until(lambda: agent.ready_endpoints(6, 61, 2), what="the scale-up once the agent runs again")
