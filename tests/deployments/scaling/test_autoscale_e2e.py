"""End to end on the local backend: a real agent, real model-server replicas, a real gateway, real Redis/Postgres.

The control plane's periodic work (autoscale tick, reconcile, config publish) runs in this process in a loop,
exactly as the Celery tasks would call it. Load from a bounded client raises replicas, removing it lowers them,
with min 0 the deployment goes to zero after the grace period, and the next request is held by the gateway and
served after a cold start, not failed. The figures (time to the first added replica, peak, cold start) are
printed as one ``AUTOSCALE-FIGURES {json}`` line for whoever reads the test log; ``bench/autoscale.py`` measures
its own scenario.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from deployments.backends.local import LocalBackend
from deployments.models import DeploymentEvent, ModelDeployment, Revision
from deployments.reconcile import engine as reconcile
from tenants.models import ApiKey, Tenant
from tests.support.controlplane import ControlPlane, celery_worker_with_beat
from tests.support.gateway import Process, start_gateway, stop
from tests.support.localagent import agent_factory

pytestmark = [pytest.mark.slow, pytest.mark.django_db, pytest.mark.timeout(240)]

STALL_MS = 600  # each request holds a replica this long, so a few clients make real concurrency


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
    acme: Tenant, make_deployment: Callable[..., ModelDeployment], redis_url: str,
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


# ---------------------------------------------------------------- the same wiring in the real processes
#
# The variant below runs the control plane as it runs in production: one ``celery -A controlplane worker --beat``
# subprocess (solo pool) whose beat sends ``deployments.autoscale_tick`` every 2 s and ``deployments.resync_all``
# every second, and whose worker reconciles what the ticks enqueue. The test process only sends load and reads
# Postgres, so the data must be committed (a transactional test).


def _wait_db(deployment: ModelDeployment, done: Callable[[ModelDeployment], bool], timeout_s: float, what: str,
             worker_log: Callable[[], str]) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        deployment.refresh_from_db()
        if done(deployment):
            return time.monotonic() - start
        time.sleep(0.25)
    state = (deployment.desired_replicas, deployment.ready_replicas, _endpoints(deployment))
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; (desired, ready, endpoints) {state};"
                         f" worker log:\n{worker_log()}")


@pytest.mark.django_db(transaction=True)
def test_the_beat_driven_worker_scales_up_under_load_and_back_to_zero(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment], redis_url: str,
    redis_prefix: str, tmp_path: Path,
) -> None:
    deployment = make_deployment(
        acme, min_replicas=0, max_replicas=3, target_concurrency=1, args=["--stall-ms", str(STALL_MS)]
    )
    ModelDeployment.unscoped_objects.filter(pk=deployment.pk).update(desired_replicas=1)
    _, key = ApiKey.issue(tenant=acme, name="load", scopes=["inference"])
    with agent_factory(redis_url, redis_prefix, tmp_path) as make_agent:
        make_agent()
        gateway = start_gateway(
            tmp_path, redis_prefix, redis_url,
            FRONTDOOR_KEY_PEPPER=settings.FRONTDOOR_KEY_PEPPER, FRONTDOOR_GATEWAY_COLD_HOLD_S="30",
        )
        try:
            # A grace longer than a replica's start on a busy machine: the first replica, wanted with no traffic
            # yet, must not be scaled away before it is ready.
            with celery_worker_with_beat(
                redis_url, redis_prefix, tmp_path, FRONTDOOR_SCALE_TO_ZERO_GRACE_S="12"
            ) as worker_log:
                _drive_load_up_and_down(deployment, gateway, key, worker_log)
        finally:
            ModelDeployment.unscoped_objects.filter(pk=deployment.pk).update(desired_replicas=0, min_replicas=0)
            reconcile.reconcile_deployment(deployment.pk, LocalBackend(redis_url=redis_url, prefix=redis_prefix))
            stop(gateway.proc)
    reasons = set(DeploymentEvent.unscoped_objects.filter(deployment=deployment).values_list("reason", flat=True))
    assert {"ScaledUp", "ScaledToZero"} <= reasons


def _drive_load_up_and_down(
    deployment: ModelDeployment, gateway: Process, key: str, worker_log: Callable[[], str]
) -> None:
    """First replica, a load step that the beat's ticks answer with more replicas, then idleness down to zero."""
    _wait_db(deployment, lambda d: d.ready_replicas >= 1 and bool(_endpoints(d)), 60, "the first replica",
             worker_log)
    threads, statuses = _load(gateway.url, key, clients=4, seconds=8)
    _wait_db(deployment, lambda d: d.desired_replicas > 1, 30, "a scale-up from the beat's ticks", worker_log)
    for thread in threads:
        thread.join(timeout=60)
    assert statuses and set(statuses) == {200}, f"load requests failed: {sorted(set(statuses))}"
    _wait_db(deployment, lambda d: d.desired_replicas == 0 and not _endpoints(d), 60, "scale to zero",
             worker_log)
