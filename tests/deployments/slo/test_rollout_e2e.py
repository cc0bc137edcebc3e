"""Canary rollouts end to end on the local backend: a real local agent and model-server replicas, a real gateway,
real Redis and Postgres, traffic from the official ``openai`` client.

The control plane's periodic work runs in this process in a loop, calling the Celery task functions the beat
schedule sends (``deployments.collect_slo``, ``deployments.rollout_tick``) plus reconcile and publish, as the worker
would. A canary whose replicas fail half their requests (the model server's ``/admin/faults`` knob) is rolled back
with a Warning event that says why; a healthy canary reaches 100 % and records its success.

Each step is judged on complete 10 s SLO intervals that start after the canary is ready at that step, so a judged
step takes 13 to 23 s; the steps are [20, 50, 100] with a 2 s pause.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
from django.conf import settings

from controlplane.snapshot.publisher import publish_config
from deployments import rollout as rollouts
from deployments import services
from deployments.backends.local import LocalBackend
from deployments.models import DeploymentEvent, ModelDeployment, Revision, Rollout
from deployments.reconcile import engine as reconcile
from deployments.tasks import collect_slo, rollout_tick
from tenants.models import ApiKey, Tenant
from tests.support.gateway import Process, start_gateway, stop
from tests.support.localagent import agent_factory, http_json

pytestmark = [pytest.mark.slow, pytest.mark.django_db, pytest.mark.timeout(150)]

STALL_MS = 60  # every request takes a little while, so both revisions' p95s sit well above timer noise


@dataclass
class Loop:
    """What the worker and beat would do: SLO collection and the rollout tick every second, reconcile and publish."""

    deployment: ModelDeployment
    backend: LocalBackend
    last_tick: float = 0.0

    def step(self) -> None:
        now = time.monotonic()
        if now - self.last_tick >= 1.0:
            collect_slo()  # the task body runs synchronously when the task is called directly
            rollout_tick()
            self.last_tick = now
        reconcile.reconcile_deployment(self.deployment.pk, self.backend)
        publish_config()

    def run_until(self, done: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.step()
            if done():
                return
            time.sleep(0.3)
        events = list(DeploymentEvent.unscoped_objects.filter(deployment=self.deployment).order_by("id")
                      .values_list("reason", "message"))
        raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; events {events[-6:]}")


@dataclass
class Traffic:
    """A bounded client: one thread sending chat completions one after another until stopped or ``max_s`` passes."""

    gateway_url: str
    key: str
    max_s: float = 90.0
    ok: int = 0
    failed: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        client = openai.OpenAI(base_url=self.gateway_url + "/v1", api_key=self.key, max_retries=0, timeout=10)
        deadline = time.monotonic() + self.max_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                client.chat.completions.create(
                    model="chat", messages=[{"role": "user", "content": "canary?"}], max_tokens=2
                )
                self.ok += 1
            except openai.APIError:
                self.failed += 1
            time.sleep(0.02)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


@pytest.fixture
def canary_stack(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment], redis_url: str,
    redis_prefix: str, tmp_path: Path,
) -> Iterator[tuple[Loop, Process, str]]:
    # One replica per revision: the stable keeps its replica until the canary's is ready, then it is drained.
    deployment = make_deployment(
        acme, min_replicas=1, max_replicas=1, target_concurrency=8, args=["--stall-ms", str(STALL_MS)]
    )
    _, key = ApiKey.issue(tenant=acme, name="canary", scopes=["inference"])
    with agent_factory(redis_url, redis_prefix, tmp_path) as make_agent:
        make_agent()
        gateway = start_gateway(tmp_path, redis_prefix, redis_url, FRONTDOOR_KEY_PEPPER=settings.FRONTDOOR_KEY_PEPPER)
        loop = Loop(deployment, LocalBackend(redis_url=redis_url, prefix=redis_prefix))
        try:
            yield loop, gateway, key
        finally:
            ModelDeployment.unscoped_objects.filter(pk=deployment.pk).update(desired_replicas=0, min_replicas=0)
            reconcile.reconcile_deployment(deployment.pk, loop.backend)
            stop(gateway.proc)


def _revision(deployment: ModelDeployment, number: int) -> Revision:
    return Revision.unscoped_objects.get(deployment=deployment, number=number)


def _start_canary(loop: Loop, gateway: Process, key: str) -> tuple[Rollout, Revision]:
    """Stable r1 serving, then a spec change makes r2 (weight 0) and a rollout starts moving traffic to it."""
    deployment = loop.deployment
    loop.run_until(lambda: bool(_revision(deployment, 1).endpoints), 40, "the stable revision's replica")
    services.update_deployment(deployment, {"args": ["--stall-ms", str(STALL_MS), "--tokens-per-s", "5000"]},
                               canary_weight=0, actor=None)
    canary = _revision(deployment, 2)
    rollout = rollouts.start_rollout(
        deployment, revision_number=2, steps=[20, 50, 100], pause_s=2, min_requests=5,
        max_error_rate_delta=0.1, max_p95_ratio=3.0, actor=None,
    )
    loop.run_until(lambda: bool(_revision(deployment, 2).endpoints), 40, "the canary's replica")
    return rollout, canary


def _events(deployment: ModelDeployment) -> list[tuple[str, str, str]]:
    return list(DeploymentEvent.unscoped_objects.filter(deployment=deployment, reason__startswith="Rollout")
                .order_by("id").values_list("reason", "kind", "message"))


def _weights(deployment: ModelDeployment) -> dict[int, int]:
    return {r.number: r.weight for r in Revision.unscoped_objects.filter(deployment=deployment)}


def _finished(rollout: Rollout) -> bool:
    rollout.refresh_from_db()
    return rollout.status != Rollout.Status.RUNNING


def test_a_canary_returning_errors_is_rolled_back_automatically(canary_stack: tuple[Loop, Process, str]) -> None:
    loop, gateway, key = canary_stack
    rollout, canary = _start_canary(loop, gateway, key)
    for endpoint in _revision(loop.deployment, 2).endpoints:  # the model server's fault knob, on r2's replicas only
        http_json("POST", endpoint + "/admin/faults", {"error_rate": 0.5})

    with Traffic(gateway.url, key) as traffic:
        loop.run_until(lambda: _finished(rollout), 60, "the rollout to end")

    assert rollout.status == Rollout.Status.ROLLED_BACK
    assert "error rate" in rollout.reason
    assert _weights(loop.deployment) == {1: 100, 2: 0}
    assert traffic.failed > 0 and traffic.ok > traffic.failed  # errors came from the canary's share only
    reason, kind, message = _events(loop.deployment)[-1]
    assert (reason, kind) == ("RolloutRolledBack", "Warning")
    assert f"{canary.name} rolled back" in message and "error rate" in message
    assert [e[0] for e in _events(loop.deployment)] == ["RolloutStarted", "RolloutRolledBack"]
    # The stable revision keeps serving once the canary is drained.
    loop.run_until(lambda: not _revision(loop.deployment, 2).endpoints, 30, "the canary to be drained")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=10)
    answer = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert answer.choices[0].message.role == "assistant"


def test_a_healthy_canary_reaches_100_percent(canary_stack: tuple[Loop, Process, str]) -> None:
    loop, gateway, key = canary_stack
    rollout, canary = _start_canary(loop, gateway, key)

    with Traffic(gateway.url, key) as traffic:
        loop.run_until(lambda: _finished(rollout), 80, "the rollout to end")

    assert rollout.status == Rollout.Status.SUCCEEDED, rollout.reason
    assert _weights(loop.deployment) == {1: 0, 2: 100}
    assert traffic.ok > 0 and traffic.failed == 0
    events = _events(loop.deployment)
    assert [e[:2] for e in events] == [
        ("RolloutStarted", "Normal"), ("RolloutStepped", "Normal"), ("RolloutStepped", "Normal"),
        ("RolloutSucceeded", "Normal"),
    ]
    assert f"{canary.name} at 50%" in events[1][2] and f"{canary.name} at 100%" in events[2][2]
