"""The replicas' own queue gauges in the autoscaler: the local agent reads ``vllm:num_requests_waiting`` from each
ready replica's /metrics alongside its health check and publishes the sum per deployment
(``<prefix>:queue:<deployment id>``); the autoscale tick adds it to the gateway's in-flight leases."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import redis

from controlplane.contracts import localagent as protocol
from deployments.models import ModelDeployment
from deployments.scaling import tick as autoscale
from localagent.health import parse_waiting
from tenants.models import Tenant
from tests.support.localagent import Agent, chat, deployment_spec, wait_until
from tests.support.scaling import add_leases

T0 = 1_800_000_000.0


def test_it_sums_the_waiting_gauge_across_labels_and_ignores_lookalikes() -> None:
    text = "\n".join([
        "# HELP vllm:num_requests_waiting Requests queued.",
        "# TYPE vllm:num_requests_waiting gauge",
        'vllm:num_requests_waiting{model_name="a",engine="0"} 3.0',
        'vllm:num_requests_waiting{model_name="a",engine="1"} 2 1764201600000',  # a sample with a timestamp
        "vllm:num_requests_waiting_by_reason 40",  # another metric sharing the prefix
        'vllm:num_requests_running{model_name="a"} 7',
    ])
    assert parse_waiting(text) == 5
    assert parse_waiting('vllm:num_requests_running{model_name="a"} 7\n') is None


@pytest.mark.django_db
def test_the_replicas_queue_adds_to_the_concurrency_the_tick_scales_on(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment], rds: redis.Redis, redis_prefix: str,
) -> None:
    deployment = make_deployment(acme, min_replicas=1, max_replicas=8, target_concurrency=2)
    ModelDeployment.unscoped_objects.filter(pk=deployment.pk).update(ready_replicas=1)
    add_leases(rds, deployment.pk, 1, int((T0 + 600) * 1000))  # one request in flight at the gateway
    rds.set(protocol.queue_key(redis_prefix, deployment.pk), 6)  # and six waiting behind a replica's batch limit
    autoscale.tick(now=T0)
    deployment.refresh_from_db()
    assert deployment.desired_replicas == 5  # ceil((1 + 6) / (0.7 x 2)); leases alone would keep ceil(1 / 1.4) = 1


@pytest.mark.django_db
def test_without_a_queue_figure_the_tick_scales_on_leases_alone(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment], rds: redis.Redis, redis_prefix: str,
) -> None:
    deployment = make_deployment(acme, min_replicas=1, max_replicas=8, target_concurrency=2)
    ModelDeployment.unscoped_objects.filter(pk=deployment.pk).update(ready_replicas=1)
    add_leases(rds, deployment.pk, 1, int((T0 + 600) * 1000))
    rds.set(protocol.queue_key(redis_prefix, deployment.pk), "not a number")
    autoscale.tick(now=T0)
    deployment.refresh_from_db()
    assert deployment.desired_replicas == 1


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_the_local_agent_publishes_the_requests_waiting_in_its_replicas(
    make_agent: Callable[..., Agent], rds: redis.Redis, redis_prefix: str,
) -> None:
    agent = make_agent()
    # One sequence at a time, each held 2.5 s: a third concurrent request must wait in the replica's queue.
    agent.backend.apply_deployment(deployment_spec(1, 1, args=["--max-num-seqs", "1", "--stall-ms", "2500"]))
    endpoint = wait_until(lambda: agent.ready_endpoints(1, 11, 1), what="a ready replica")[0]
    key = protocol.queue_key(redis_prefix, 1)
    assert wait_until(lambda: rds.get(key) is not None, what="a queue figure") and int(rds.get(key) or -1) == 0

    threads = [threading.Thread(target=chat, args=(endpoint,), daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    seen = wait_until(lambda: int(rds.get(key) or 0) or None, what="the queue to show at the agent")
    assert 1 <= seen <= 2  # one request runs; the others wait
    for thread in threads:
        thread.join(timeout=30)
    wait_until(lambda: rds.get(key) == "0", what="the queue to drain")
    assert 0 < rds.ttl(key) <= protocol.QUEUE_TTL_S
