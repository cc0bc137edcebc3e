"""Refused everywhere means cold: a scale-to-zero deployment whose listed replicas all refuse the connection is held
like a cold one (wake signal, hold timeout) and served once a replica is there; errors after bytes were sent are not.

The listed replica is a port nobody listens on: what a gateway sees when its snapshot still names a replica that has
just stopped.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import redis

from controlplane.contracts.redis_names import wake_key
from tests.support.gateway import ROOT, Process, World, free_port, start_gateway, stop, wait_http

CHAT = "/v1/chat/completions"
GATEWAY_HOLD_S = 3  # the ``gateway`` fixture's FRONTDOOR_GATEWAY_COLD_HOLD_S


def chat(gateway: Process, key: str, model: str = "chat") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    return httpx.post(gateway.url + CHAT, json=body, headers={"authorization": f"Bearer {key}"}, timeout=30)


def in_background(gateway: Process, key: str) -> tuple[threading.Thread, list[httpx.Response]]:
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(chat(gateway, key)), daemon=True)
    thread.start()
    return thread, answers


def wait_for_wake(client: redis.Redis, prefix: str, deployment_id: int) -> None:
    deadline = time.monotonic() + 10
    while client.get(wake_key(prefix, deployment_id)) is None:
        assert time.monotonic() < deadline, "no wake signal"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def patient_gateway(session_tmp: Path, prefix: str, world: World) -> Iterator[Process]:
    """A gateway that holds for 30 s, so a replica started during the hold is in time on a busy machine."""
    proc = start_gateway(session_tmp, prefix, FRONTDOOR_GATEWAY_COLD_HOLD_S="30")
    yield proc
    stop(proc.proc)


@pytest.fixture
def modelserver_on() -> Iterator[list[Process]]:
    """Model servers a test starts on a port of its choosing; they stop afterwards."""
    started: list[Process] = []
    yield started
    for process in started:
        stop(process.proc)


def start_modelserver_at(tmp: Path, port: int) -> Process:
    log_path = tmp / f"modelserver-{port}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelserver", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", proc)
    return Process(proc, url, log_path)


def test_it_holds_a_request_refused_everywhere_and_serves_it_from_the_next_snapshots_replica(
    world: World, patient_gateway: Process, upstream: Process, redis_client: redis.Redis, prefix: str
) -> None:
    gateway = patient_gateway
    tenant = world.tenant()
    dep = world.deployment(tenant, "chat", [f"http://127.0.0.1:{free_port()}"], min_replicas=0)
    key = world.key(tenant)
    world.publish(gateway)

    thread, answers = in_background(gateway, key.full)
    wait_for_wake(redis_client, prefix, dep["id"])
    assert thread.is_alive(), f"answered instead of held: {[a.status_code for a in answers]}"

    dep["revisions"][0]["endpoints"] = [upstream.url]  # the autoscaler's replica reaches the snapshot
    world.publish()
    thread.join(20)
    assert [a.status_code for a in answers] == [200]


def test_it_tries_a_refusing_replica_again_once_its_port_answers(
    world: World, patient_gateway: Process, session_tmp: Path, modelserver_on: list[Process]
) -> None:
    gateway = patient_gateway
    # The local agent restarts a slot on its old port, so the same endpoint may come back in the next snapshot.
    tenant = world.tenant()
    port = free_port()
    world.deployment(tenant, "chat", [f"http://127.0.0.1:{port}"], min_replicas=0)
    key = world.key(tenant)
    world.publish(gateway)

    thread, answers = in_background(gateway, key.full)
    modelserver_on.append(start_modelserver_at(session_tmp, port))
    assert thread.is_alive(), f"answered instead of held: {[a.status_code for a in answers]}"
    world.publish()  # a new version, the same endpoint
    thread.join(20)
    assert [a.status_code for a in answers] == [200]


def test_a_held_refused_request_gets_deployment_starting_when_no_replica_comes(
    world: World, gateway: Process, redis_client: redis.Redis, prefix: str
) -> None:
    tenant = world.tenant()
    dep = world.deployment(tenant, "chat", [f"http://127.0.0.1:{free_port()}"], min_replicas=0)
    key = world.key(tenant)
    world.publish(gateway)

    response = chat(gateway, key.full)  # the test gateway holds for 3 s

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "deployment_starting"
    assert int(response.headers["retry-after"]) >= 1
    assert redis_client.ttl(wake_key(prefix, dep["id"])) > 0


def test_a_deployment_with_a_longer_startup_window_holds_past_the_gateways_own_hold(
    world: World, gateway: Process, upstream: Process, redis_client: redis.Redis, prefix: str
) -> None:
    tenant = world.tenant()
    dep = world.deployment(tenant, "chat", [f"http://127.0.0.1:{free_port()}"], min_replicas=0)
    dep["cold_hold_s"] = 60  # what the control plane publishes for a deployment whose pods take minutes to start
    key = world.key(tenant)
    world.publish(gateway)

    thread, answers = in_background(gateway, key.full)
    wait_for_wake(redis_client, prefix, dep["id"])
    thread.join(GATEWAY_HOLD_S + 2)  # past the test gateway's own hold, which would have answered 503 by now
    assert thread.is_alive(), f"answered instead of held: {[a.status_code for a in answers]}"

    dep["revisions"][0]["endpoints"] = [upstream.url]
    world.publish()
    thread.join(20)
    assert [a.status_code for a in answers] == [200]


@pytest.fixture
def hangs_up_after_reading() -> Iterator[str]:
    """A replica that accepts, reads the request and closes without answering: bytes were sent."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    done.set()
    thread.join(5)
    server.close()


def test_an_error_after_the_request_was_sent_is_not_held(
    world: World, gateway: Process, hangs_up_after_reading: str, redis_client: redis.Redis, prefix: str
) -> None:
    tenant = world.tenant()
    dep = world.deployment(tenant, "chat", [hangs_up_after_reading], min_replicas=0)
    key = world.key(tenant)
    world.publish(gateway)

    response = chat(gateway, key.full)

    assert response.status_code == 502
    assert redis_client.get(wake_key(prefix, dep["id"])) is None
