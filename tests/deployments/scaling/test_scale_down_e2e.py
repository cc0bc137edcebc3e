"""The way down loses nothing: scale-downs, scale to zero, a revision replacement and a canary prune under load, with
real processes (local agent, built-in model-server replicas, a gateway, Redis, Postgres), counting what clients see.

Scaling runs the control plane as `make run` does: a Celery worker with beat (autoscale tick every 2 s, resync every
5 s, reconciles with their follow-ups), shortened windows, committed data, the REST API read through the test client.
The revision tests run the control plane's work in this process (``tests/support/controlplane.py``'s ``ControlPlane``:
reconcile and publish every 0.25 s). Clients send chat completions, half of them streamed, and count per phase: a
failed request is any answer but 200, a cut stream one that does not end with ``data: [DONE]``. Every phase must
have 0 of both, and a burst of 20 concurrent requests sent as soon as the API reports zero replicas must be served
20/20 (held by the gateway while the deployment wakes up, never refused).

What makes it hold: a replica leaves the snapshot before its process stops, and stops only once every gateway has
acknowledged a snapshot without it and its requests are done (controlplane/contracts/drain.py).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from django.conf import settings

from deployments import services
from deployments.backends.local import LocalBackend
from deployments.models import ModelDeployment, Revision
from deployments.reconcile import engine as reconcile
from quotas.models import Quota
from tenants.models import ApiKey, Tenant
from tests.support.controlplane import ControlPlane, celery_worker_with_beat
from tests.support.gateway import Process, start_gateway, stop
from tests.support.localagent import Agent, agent_factory

pytestmark = [pytest.mark.slow, pytest.mark.django_db, pytest.mark.timeout(240)]

STALL_MS = 250  # each request holds its replica a while, so a few clients make real concurrency


@dataclass
class Tally:
    """What the clients saw during one phase."""

    ok: int = 0
    failed: list[str] = field(default_factory=list)  # status codes (and error codes) of failed requests
    cut: int = 0  # streams without [DONE]
    streams: int = 0

    def summary(self) -> str:
        return f"{self.ok} ok, {len(self.failed)} failed {self.failed[:5]}, {self.cut}/{self.streams} streams cut"


class Clients:
    """Bounded clients: ``count`` threads sending one request after another (every other one streamed), pausing
    ``pause_s`` between them, counting into the current phase's tally until stopped."""

    def __init__(self, gateway_url: str, key: str, count: int, pause_s: float = 0.0, max_tokens: int = 6) -> None:
        self.url, self.key, self.pause_s, self.max_tokens = (
            gateway_url + "/v1/chat/completions",
            key,
            pause_s,
            max_tokens,
        )
        self.tally = Tally()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(count)]
        for thread in self._threads:
            thread.start()

    def _run(self, index: int) -> None:
        with httpx.Client(timeout=90) as client:
            stream = index % 2 == 1
            while not self._stop.is_set():
                request(client, self.url, self.key, stream, self.max_tokens, self.tally, self._lock)
                stream = not stream
                self._stop.wait(self.pause_s)

    def stop(self) -> Tally:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)
        return self.tally


def request(
    client: httpx.Client, url: str, key: str, stream: bool, max_tokens: int, tally: Tally, lock: threading.Lock
) -> None:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}
    headers = {"authorization": f"Bearer {key}"}
    try:
        if stream:
            with client.stream("POST", url, json={**body, "stream": True}, headers=headers) as response:
                status = response.status_code
                lines = [line for line in response.iter_lines() if line.startswith("data: ")] if status == 200 else []
                text = "" if status == 200 else response.read().decode(errors="replace")
        else:
            response = client.post(url, json=body, headers=headers)
            status, lines, text = response.status_code, [], response.text
    except httpx.HTTPError as exc:
        status, lines, text = 0, [], type(exc).__name__
    with lock:
        if status != 200:
            tally.failed.append(f"{status} {_code(text)}")
            return
        tally.ok += 1
        if stream:
            tally.streams += 1
            if not lines or lines[-1] != "data: [DONE]":
                tally.cut += 1


def _code(text: str) -> str:
    try:
        return str(json.loads(text)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return text[:60]


def burst(gateway_url: str, key: str, count: int) -> tuple[Tally, list[threading.Thread]]:
    """``count`` requests sent at the same moment (half streamed), in threads; the tally fills as they answer."""
    tally, lock, gate = Tally(), threading.Lock(), threading.Barrier(count)
    url = gateway_url + "/v1/chat/completions"

    def one(index: int) -> None:
        with httpx.Client(timeout=120) as client:
            gate.wait()
            request(client, url, key, index % 2 == 1, 4, tally, lock)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    return tally, threads


@dataclass
class Stack:
    plane: ControlPlane
    gateway: Process
    agent: Agent
    key: str
    api: Any  # a REST client with a key of scope "manage"

    def reported(self) -> dict[str, Any]:
        answer = self.api.get("/api/v1/tenants/acme/deployments/chat/")
        assert answer.status_code == 200, answer.content
        return dict(answer.json())

    def draining(self) -> list[dict[str, Any]]:
        return draining(self.agent)

    def until(self, done: Callable[[], bool], timeout_s: float, what: str) -> None:
        self.plane.run_until(lambda _: done(), timeout_s, what)


@pytest.fixture
def stack(
    acme: Tenant,
    make_deployment: Callable[..., ModelDeployment],
    key_api: Callable[[Tenant, list[str]], Any],
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., Stack]]:
    """``stack(**deployment fields)``: the deployment ``chat`` of acme, an agent, a gateway and the control loop."""
    monkeypatch.setenv("FRONTDOOR_SCALE_TO_ZERO_GRACE_S", "3")
    monkeypatch.setenv("FRONTDOOR_AUTOSCALE_STABLE_WINDOW_S", "4")
    monkeypatch.setenv("FRONTDOOR_AUTOSCALE_PANIC_WINDOW_S", "2")
    Quota.objects.for_tenant(acme).update(requests_per_minute=None, tokens_per_minute=None)
    _, key = ApiKey.issue(tenant=acme, name="load", scopes=["inference"])
    started: list[ControlPlane] = []
    with agent_factory(redis_url, redis_prefix, tmp_path) as make_agent:
        agent = make_agent()
        gateway = start_gateway(
            tmp_path,
            redis_prefix,
            redis_url,
            FRONTDOOR_KEY_PEPPER=settings.FRONTDOOR_KEY_PEPPER,
            FRONTDOOR_GATEWAY_COLD_HOLD_S="90",
        )

        def make(**fields: Any) -> Stack:
            deployment = make_deployment(acme, **fields)
            plane = ControlPlane(deployment, LocalBackend(redis_url=redis_url, prefix=redis_prefix))
            started.append(plane)
            return Stack(plane, gateway, agent, key, key_api(acme, ["manage"]))

        try:
            yield make
        finally:
            for plane in started:
                ModelDeployment.unscoped_objects.filter(pk=plane.deployment.pk).update(
                    desired_replicas=0, min_replicas=0
                )
                reconcile.reconcile_deployment(plane.deployment.pk, plane.backend)
            stop(gateway.proc)


@pytest.mark.django_db(transaction=True)
def test_scaling_up_down_and_to_zero_under_load_loses_no_request_and_cuts_no_stream(
    acme: Tenant,
    make_deployment: Callable[..., ModelDeployment],
    key_api: Callable[[Tenant, list[str]], Any],
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    # The control plane as `make run` runs it: a worker with beat (ticks every 2 s, resync every 5 s), committed data.
    Quota.objects.for_tenant(acme).update(requests_per_minute=None, tokens_per_minute=None)
    deployment = make_deployment(
        acme, min_replicas=0, max_replicas=2, target_concurrency=1, args=["--stall-ms", str(STALL_MS)]
    )
    _, key = ApiKey.issue(tenant=acme, name="load", scopes=["inference"])
    api = key_api(acme, ["manage"])
    tallies: dict[str, Tally] = {}
    with agent_factory(redis_url, redis_prefix, tmp_path) as make_agent:
        agent = make_agent()
        gateway = start_gateway(
            tmp_path,
            redis_prefix,
            redis_url,
            FRONTDOOR_KEY_PEPPER=settings.FRONTDOOR_KEY_PEPPER,
            FRONTDOOR_GATEWAY_COLD_HOLD_S="90",
        )
        windows = {
            "FRONTDOOR_RESYNC_SECONDS": "5",
            "FRONTDOOR_SCALE_TO_ZERO_GRACE_S": "3",
            "FRONTDOOR_AUTOSCALE_STABLE_WINDOW_S": "4",
        }
        try:
            with celery_worker_with_beat(redis_url, redis_prefix, tmp_path, **windows) as worker_log:

                def reported() -> dict[str, Any]:
                    answer = api.get("/api/v1/tenants/acme/deployments/chat/")
                    assert answer.status_code == 200, answer.content
                    return dict(answer.json())

                def until(done: Callable[[dict[str, Any]], bool], timeout_s: float, what: str) -> None:
                    deadline = time.monotonic() + timeout_s
                    while not done(reported()):
                        if time.monotonic() > deadline:
                            raise AssertionError(f"timed out waiting for {what}: {reported()}\n{worker_log()}")
                        time.sleep(0.1)

                def one_process(d: dict[str, Any]) -> bool:
                    return d["ready_replicas"] == 1 and len(agent.replicas()) == 1 and not draining(agent)

                # High load from zero (the first requests wait for the cold start): 4 clients back to back want more
                # than the 2 replicas allowed.
                clients = Clients(gateway.url, key, count=4)
                until(lambda d: d["ready_replicas"] == 2 and clients.tally.ok >= 20, 90, "a scale-up to 2")
                tallies["high load, up to 2"] = clients.stop()

                # Lower load: one paced client (about 0.2 requests in flight, well under one replica's target even
                # when a busy machine doubles every latency) needs one replica; the other drains.
                clients = Clients(gateway.url, key, count=1, pause_s=1.0)
                until(lambda d: d["desired_replicas"] == 1, 60, "a scale-down to 1")
                until(one_process, 60, "the second replica to be gone")
                tallies["lower load, 2 -> 1"] = clients.stop()

                # Idle until the API reports zero, then a burst at once.
                until(lambda d: d["ready_replicas"] == 0 and d["desired_replicas"] == 0, 60, "zero replicas")
                tally, threads = burst(gateway.url, key, 20)
                for thread in threads:
                    thread.join(120)
                tallies["burst of 20 at zero"] = tally
        finally:
            ModelDeployment.unscoped_objects.filter(pk=deployment.pk).update(desired_replicas=0, min_replicas=0)
            reconcile.reconcile_deployment(deployment.pk, LocalBackend(redis_url=redis_url, prefix=redis_prefix))
            stop(gateway.proc)

    report = {phase: t.summary() for phase, t in tallies.items()}
    print("SCALE-DOWN-LOSSES " + json.dumps(report))
    for phase, t in tallies.items():
        assert not t.failed and t.cut == 0, f"{phase}: {t.summary()}"
        assert t.ok > 0, f"{phase}: no request at all"
    assert tallies["burst of 20 at zero"].ok == 20


def draining(agent: Agent) -> list[dict[str, Any]]:
    return list(agent.control("/status").get("draining", []))


def test_a_revision_replacement_and_a_canary_prune_under_load_lose_nothing(stack: Callable[..., Stack]) -> None:
    # Streams of about 8 s: a replica stopped under them (SIGTERM, SIGKILL 5 s later) would cut them.
    s = stack(min_replicas=1, max_replicas=1, target_concurrency=8, args=["--tokens-per-s", "3"])
    deployment = s.plane.deployment
    tallies: dict[str, Tally] = {}

    def numbers_routed() -> set[int]:
        return {r.number for r in Revision.unscoped_objects.filter(deployment=deployment) if r.endpoints and r.weight}

    def only(number: int) -> bool:
        """Only revision ``number`` has replicas left, and nothing drains."""
        running = {int(r["revision_id"]) for r in s.agent.replicas()}
        return running == {Revision.unscoped_objects.get(deployment=deployment, number=number).pk} and not s.draining()

    s.until(lambda: numbers_routed() == {1}, 60, "r1 serving")

    # Replacement: r2 takes all traffic once ready, r1 is pruned while its streams are in flight.
    clients = Clients(s.gateway.url, s.key, count=3, max_tokens=24)
    time.sleep(1.0)  # the clients' first streams are on r1
    services.update_deployment(deployment, {"args": ["--tokens-per-s", "3", "--stall-ms", "1"]}, actor=None)
    s.until(lambda: only(2), 90, "r1 drained and stopped")
    tallies["revision replacement"] = clients.stop()

    # Canary: r3 at 50 %, then promoted; r2 is pruned while its streams are in flight.
    services.update_deployment(
        deployment, {"args": ["--tokens-per-s", "3", "--stall-ms", "2"]}, canary_weight=50, actor=None
    )
    s.until(lambda: numbers_routed() == {2, 3}, 60, "the canary serving beside r2")
    clients = Clients(s.gateway.url, s.key, count=4, max_tokens=24)
    time.sleep(1.0)
    services.set_traffic(deployment, {2: 0, 3: 100}, actor=None)
    s.until(lambda: only(3), 90, "r2 drained and stopped")
    tallies["canary prune"] = clients.stop()

    report = {phase: t.summary() for phase, t in tallies.items()}
    print("SCALE-DOWN-LOSSES " + json.dumps(report))
    for phase, t in tallies.items():
        assert not t.failed and t.cut == 0, f"{phase}: {t.summary()}"
        assert t.streams > 0, f"{phase}: no stream at all"
