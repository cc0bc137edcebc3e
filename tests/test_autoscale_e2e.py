"""End to end on the local backend: a real agent, real model-server replicas, a real gateway, real Redis/Postgres.

The control plane's periodic work (autoscale tick, reconcile, config publish) runs in this process in a loop,
exactly as the Celery tasks would call it. Load from a bounded client raises replicas, removing it lowers them,
with min 0 the deployment goes to zero after the grace period, and the next request is held by the gateway and
served after a cold start, not failed. The figures (time to the first added replica, peak, cold start) are
printed as one ``AUTOSCALE-FIGURES {json}`` line that ``bench/autoscale.py`` reads.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from deployments import autoscale, reconcile
from deployments.autoscaler import TICK_S
from deployments.backends.local import LocalBackend
from deployments.models import DeploymentEvent, ModelDeployment, Revision
from quotas.publish import publish_config
from tenants.models import ApiKey, Tenant
from tests.deployments_fixtures import acme  # noqa: F401
from tests.gateway.conftest import Process, start_gateway, stop
from tests.scaling_fixtures import make_deployment  # noqa: F401
from tests.test_localagent import agent_factory

pytestmark = [pytest.mark.slow, pytest.mark.django_db, pytest.mark.timeout(240)]

STALL_MS = 600  # each request holds a replica this long, so a few clients make real concurrency


@dataclass
class ControlPlane:
    """Runs what the beat schedule would: the autoscale tick every 2 s, reconcile and publish as they are asked."""

    deployment: ModelDeployment
    backend: LocalBackend
    last_tick: float = 0.0
    desired_log: list[tuple[float, int, int]] = field(default_factory=list)  # (time, desired, ready)

    def step(self) -> ModelDeployment:
        now = time.time()
        if now - self.last_tick >= TICK_S:
            autoscale.tick(now)
            self.last_tick = now
        reconcile.reconcile_deployment(self.deployment.pk, self.backend)
        publish_config()
        self.deployment.refresh_from_db()
        self.desired_log.append((now, self.deployment.desired_replicas, self.deployment.ready_replicas))
        return self.deployment

    def run_until(self, done: Callable[[ModelDeployment], bool], timeout_s: float, what: str) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if done(self.step()):
                return time.monotonic() - start
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; history {self.desired_log[-8:]}")


def _chat(gateway_url: str, key: str, timeout_s: float = 90.0) -> int:
    body = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).encode()
    request = urllib.request.Request(  # noqa: S310 (our own gateway, http)
        gateway_url + "/v1/chat/completions", data=body, method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (our own gateway)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _endpoints(deployment: ModelDeployment) -> list[str]:
    return [url for r in Revision.unscoped_objects.filter(deployment=deployment) for url in r.endpoints]


@pytest.fixture
def stack(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment], redis_url: str,  # noqa: F811
    redis_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[ControlPlane, Process, str]]:
    monkeypatch.setenv("FRONTDOOR_SCALE_TO_ZERO_GRACE_S", "4")
    monkeypatch.setenv("FRONTDOOR_AUTOSCALE_STABLE_WINDOW_S", "6")
    monkeypatch.setenv("FRONTDOOR_AUTOSCALE_PANIC_WINDOW_S", "2")
    deployment = make_deployment(
        acme, min_replicas=0, max_replicas=3, target_concurrency=1, args=["--stall-ms", str(STALL_MS)]
    )
    _, key = ApiKey.issue(tenant=acme, name="load", scopes=["inference"])
    with agent_factory(redis_url, redis_prefix, tmp_path) as make_agent:
        make_agent()
        gateway = start_gateway(
            tmp_path, redis_prefix, redis_url,
            FRONTDOOR_KEY_PEPPER=settings.FRONTDOOR_KEY_PEPPER, FRONTDOOR_GATEWAY_COLD_HOLD_S="90",
        )
        plane = ControlPlane(deployment, LocalBackend(redis_url=redis_url, prefix=redis_prefix))
        try:
            yield plane, gateway, key
        finally:
            plane.deployment.refresh_from_db()
            ModelDeployment.unscoped_objects.filter(pk=deployment.pk).update(desired_replicas=0, min_replicas=0)
            plane.deployment.refresh_from_db()
            reconcile.reconcile_deployment(deployment.pk, plane.backend)
            stop(gateway.proc)


def _load(gateway_url: str, key: str, clients: int, seconds: float) -> tuple[list[threading.Thread], list[int]]:
    """``clients`` threads, each sending one request after another for ``seconds`` (a bounded client)."""
    statuses: list[int] = []
    deadline = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < deadline:
            statuses.append(_chat(gateway_url, key))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    return threads, statuses


def test_load_raises_replicas_idleness_lowers_them_to_zero_and_a_cold_request_is_served(
    stack: tuple[ControlPlane, Process, str],
) -> None:
    plane, gateway, key = stack
    figures: dict[str, Any] = {}

    first_ready = plane.run_until(lambda d: d.ready_replicas >= 1 and bool(_endpoints(d)), 60, "the first replica")
    figures["first_replica_s"] = round(first_ready, 2)
    assert _chat(gateway.url, key) == 200

    # Load step: 4 clients for 10 s against 1 replica whose target is 1 request in flight.
    before = plane.deployment.desired_replicas
    threads, statuses = _load(gateway.url, key, clients=4, seconds=10)
    load_start = time.monotonic()
    figures["to_first_added_replica_s"] = round(
        plane.run_until(lambda d: d.desired_replicas > before, 30, "a scale-up under load"), 2
    )
    plane.run_until(lambda d: not any(t.is_alive() for t in threads), 40, "the load to end")
    load_end = time.monotonic()
    peak = max(desired for _, desired, _ in plane.desired_log)
    figures.update(peak_desired=peak, load_clients=4, max_replicas=3, load_s=round(load_end - load_start, 1))
    assert peak > before
    assert statuses and set(statuses) == {200}, f"load requests failed: {sorted(set(statuses))}"

    # Idle: down by at most half per tick, then zero after the grace period.
    figures["to_zero_after_load_s"] = round(
        plane.run_until(lambda d: d.desired_replicas == 0 and not _endpoints(d), 60, "scale to zero"), 2
    )
    reasons = set(DeploymentEvent.unscoped_objects.filter(deployment=plane.deployment).values_list("reason", flat=True))
    assert {"ScaledUp", "ScaledToZero"} <= reasons

    # A request for the cold deployment is held, wakes it, and is served.
    outcome: list[int] = []
    cold = threading.Thread(target=lambda: outcome.append(_chat(gateway.url, key)), daemon=True)
    started = time.monotonic()
    cold.start()
    plane.run_until(lambda d: not cold.is_alive(), 90, "the held request to finish")
    figures["cold_start_s"] = round(time.monotonic() - started, 2)
    assert outcome == [200]
    print("AUTOSCALE-FIGURES " + json.dumps(figures))
