"""Autoscaling benchmark on the local backend: time from a load step to the first added replica, peak overshoot over
the replicas the load needs, time back to zero once idle, the cold-start time of a request held at zero, and the
requests that fail while replicas are taken away (goal 0).

``python bench/autoscale.py [--runs 2] [--clients 4] [--json]``

Each run is a real local agent, built-in model-server replicas that stall ``--stall-ms`` per request and run at most
``--max-num-seqs`` requests at once (the rest wait in the replica's queue, which the agent publishes as its queue
gauge), a real gateway, Redis and Postgres (its own database, created and dropped here). The control plane's periodic
work runs in this process in a loop as the beat schedule would: the autoscale tick every 2 s, reconcile and config
publish every 0.25 s. Windows are shortened (stable 6 s, panic 2 s, scale-to-zero grace 4 s) so a run takes about a
minute.

The deployment has ``max_replicas`` well above what the load needs, so the autoscaler is never capped and an
overshoot shows. ``--clients`` bounded clients each keep one request in flight, so the load is that many concurrent
requests, and the replicas it needs at the target are ``needed = ceil(clients / (0.7 * target_concurrency))``
(0.7 is the KPA target utilisation). **Overshoot** = peak desired replicas during the load step - needed (and the
same for ready replicas); **settled** is the desired count at the end of the load, once the stable window has had its
say. **Failed during scale-down**: after the cold start, the load step runs again, then one paced client keeps
sending while the count comes down to 1, then, once the API reports 0 (desired and ready), a burst of 20 concurrent
requests is sent at once; every answer but 200 in those two stretches counts (a replica must leave the routing
table before it stops). That phase reconciles at the worker's cadence (a pass when the desired count changes,
follow-ups every 2 s while progressing, a resync every 5 s) rather than every step, as `make run` does.
Uses ``REDIS_URL`` and ``FRONTDOOR_REDIS_PREFIX`` (a run adds its own suffix) from the environment.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BENCH_DB = os.environ.get("FRONTDOOR_BENCH_DATABASE", "bench_fd_autoscale")
TARGET_UTILISATION = 0.7  # deployments/scaling/kpa.py: the KPA aims each replica at 70 % of target_concurrency
WINDOWS = {
    "FRONTDOOR_SCALE_TO_ZERO_GRACE_S": "4",
    "FRONTDOOR_AUTOSCALE_STABLE_WINDOW_S": "6",
    "FRONTDOOR_AUTOSCALE_PANIC_WINDOW_S": "2",
}
FIELDS = (
    ("to_first_added_replica_s", "load step -> first added replica (desired raised, s)"),
    ("to_first_added_ready_s", "load step -> first added replica ready (s)"),
    ("needed", "replicas the load needs at the target"),
    ("peak_desired", "peak desired replicas during the load"),
    ("overshoot_desired", "overshoot: peak desired - needed"),
    ("peak_ready", "peak ready replicas during the load"),
    ("overshoot_ready", "overshoot: peak ready - needed"),
    ("settled_desired", "desired replicas at the end of the load"),
    ("to_zero_after_load_s", "load gone -> zero replicas, no endpoint (s)"),
    ("cold_start_s", "request at zero -> served (cold start, s)"),
    ("first_replica_s", "new deployment -> first ready replica (s)"),
    ("scale_down_requests", "requests sent while scaling down, plus a burst of 20 at 0"),
    ("failed_during_scale_down", "of those, failed (goal 0)"),
)
BURST = 20
# The worker's cadence (deployments/tasks.py, scripts/run.sh): follow-ups of a progressing pass, the resync period.
FOLLOW_UP_S, FOLLOW_UPS, RESYNC_S = 2.0, 10, 5.0


@dataclass
class Scenario:
    clients: int
    load_s: float
    target_concurrency: int
    max_num_seqs: int
    stall_ms: int
    max_replicas: int

    @property
    def needed(self) -> int:
        return math.ceil(self.clients / (TARGET_UTILISATION * self.target_concurrency))


def _admin_sql(sql: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c", sql], check=True, capture_output=True)


def _chat(gateway_url: str, key: str, timeout_s: float = 90.0) -> int:
    body = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).encode()
    request = urllib.request.Request(  # noqa: S310 (our own gateway, http)
        gateway_url + "/v1/chat/completions",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (our own gateway)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@dataclass
class ControlPlane:
    """What the beat schedule runs, in a loop: the autoscale tick every 2 s, reconcile and publish every step.

    With ``worker_cadence`` it reconciles as the worker would instead: when a tick changed the desired count (the
    enqueued reconcile), then every 2 s while a pass ends ``progressing`` (its follow-ups, at most 10), and at every
    resync (``RESYNC_S``, what `make run` sets). Between those passes the backend's news waits, as it does in
    production, which is where a replica stopped before the gateways stop routing to it shows.
    """

    deployment_id: int
    backend: Any
    last_tick: float = 0.0
    log: list[tuple[float, int, int]] = field(default_factory=list)  # (monotonic time, desired, ready)
    worker_cadence: bool = False
    _follow_up_at: float | None = None
    _follow_ups: int = 0
    _resync_at: float = 0.0

    def step(self) -> tuple[int, int, bool]:
        from controlplane.snapshot.publisher import publish_config
        from deployments.models import ModelDeployment, Revision
        from deployments.reconcile import engine as reconcile
        from deployments.scaling import tick as autoscale
        from deployments.scaling.kpa import TICK_S

        now = time.time()
        before = ModelDeployment.unscoped_objects.get(pk=self.deployment_id).desired_replicas
        if now - self.last_tick >= TICK_S:
            autoscale.tick(now)
            self.last_tick = now
        if not self.worker_cadence:
            reconcile.reconcile_deployment(self.deployment_id, self.backend)
        elif ModelDeployment.unscoped_objects.get(pk=self.deployment_id).desired_replicas != before:
            self._reconcile(reconcile, now, FOLLOW_UPS)
        elif self._follow_up_at is not None and now >= self._follow_up_at:
            self._reconcile(reconcile, now, self._follow_ups - 1)
        elif now >= self._resync_at:
            self._resync_at = now + RESYNC_S
            self._reconcile(reconcile, now, 0)
        publish_config()
        d = ModelDeployment.unscoped_objects.get(pk=self.deployment_id)
        routed = any(r.endpoints for r in Revision.unscoped_objects.filter(deployment_id=self.deployment_id))
        self.log.append((time.monotonic(), d.desired_replicas, d.ready_replicas))
        return d.desired_replicas, d.ready_replicas, routed

    def _reconcile(self, reconcile: Any, now: float, follow_ups: int) -> None:
        outcome = reconcile.reconcile_deployment(self.deployment_id, self.backend).outcome
        progressing = outcome == "progressing" and follow_ups > 0
        self._follow_up_at, self._follow_ups = (now + FOLLOW_UP_S, follow_ups) if progressing else (None, 0)

    def run_until(self, done: Callable[[int, int, bool], bool], timeout_s: float, what: str) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if done(*self.step()):
                return time.monotonic() - start
            time.sleep(0.25)
        raise SystemExit(f"timed out after {timeout_s:.0f} s waiting for {what}; (t, desired, ready) {self.log[-8:]}")


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


def run_once(scenario: Scenario, tmp: Path) -> dict[str, Any]:
    from django.conf import settings

    from deployments import services
    from deployments.backends.local import LocalBackend
    from deployments.models import ModelDeployment
    from deployments.reconcile import engine as reconcile
    from quotas.models import Quota
    from tenants.models import ApiKey, Tenant
    from tests.support.gateway import start_gateway, stop
    from tests.support.localagent import agent_factory

    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = settings.FRONTDOOR_REDIS_PREFIX
    slug = f"bench-{uuid.uuid4().hex[:6]}"
    tenant = Tenant.objects.create(slug=slug, name=slug)
    Quota.unscoped_objects.create(tenant=tenant, max_replicas=scenario.max_replicas + 2)
    deployment = services.create_deployment(
        tenant,
        {
            "name": "chat",
            "runtime": "builtin",
            "model": "frontdoor/sim-chat",
            "min_replicas": 0,
            "max_replicas": scenario.max_replicas,
            "target_concurrency": scenario.target_concurrency,
            "args": ["--stall-ms", str(scenario.stall_ms), "--max-num-seqs", str(scenario.max_num_seqs)],
        },
        actor=None,
    )
    _, key = ApiKey.issue(tenant=tenant, name="load", scopes=["inference"])
    backend = LocalBackend(redis_url=redis_url, prefix=prefix)
    figures: dict[str, Any] = {"needed": scenario.needed}
    with agent_factory(redis_url, prefix, tmp) as make_agent:
        make_agent()
        pepper = settings.FRONTDOOR_KEY_PEPPER
        gateway = start_gateway(tmp, prefix, redis_url, FRONTDOOR_KEY_PEPPER=pepper, FRONTDOOR_GATEWAY_COLD_HOLD_S="90")
        plane = ControlPlane(deployment.pk, backend)
        try:
            first = plane.run_until(lambda d, r, e: r >= 1 and e, 60, "the first replica")
            figures["first_replica_s"] = round(first, 2)
            if _chat(gateway.url, key) != 200:
                raise SystemExit("the first request through the gateway failed")

            # The load step: `clients` concurrent requests against one replica.
            before_desired, before_ready = plane.log[-1][1], plane.log[-1][2]
            threads, statuses = _load(gateway.url, key, scenario.clients, scenario.load_s)
            load_start = time.monotonic()
            first_added = plane.run_until(lambda d, r, e: d > before_desired, 30, "a scale-up under load")
            figures["to_first_added_replica_s"] = round(first_added, 2)
            figures["to_first_added_ready_s"] = round(
                plane.run_until(lambda d, r, e: r > before_ready, 30, "an added replica ready") + first_added, 2
            )
            plane.run_until(lambda d, r, e: not any(t.is_alive() for t in threads), scenario.load_s + 60, "load end")
            during = [(d, r) for t, d, r in plane.log if t >= load_start]
            figures["peak_desired"] = max(d for d, _ in during)
            figures["peak_ready"] = max(r for _, r in during)
            figures["overshoot_desired"] = figures["peak_desired"] - scenario.needed
            figures["overshoot_ready"] = figures["peak_ready"] - scenario.needed
            figures["settled_desired"] = during[-1][0]
            figures["requests"] = len(statuses)
            if not statuses or set(statuses) != {200}:
                raise SystemExit(f"load requests failed: {sorted(set(statuses))}")

            # Idle: down by at most half per tick, then zero after the grace period.
            figures["to_zero_after_load_s"] = round(
                plane.run_until(lambda d, r, e: d == 0 and not e, 60, "scale to zero"), 2
            )

            # A request for the cold deployment is held by the gateway, wakes it, and is served.
            outcome: list[int] = []
            cold = threading.Thread(target=lambda: outcome.append(_chat(gateway.url, key)), daemon=True)
            started = time.monotonic()
            cold.start()
            plane.run_until(lambda d, r, e: not cold.is_alive(), 90, "the held request to finish")
            figures["cold_start_s"] = round(time.monotonic() - started, 2)
            if outcome != [200]:
                raise SystemExit(f"the cold request was not served: {outcome}")
            figures["timeline"] = _changes(plane.log, load_start)
            figures.update(_scale_down_under_traffic(plane, gateway.url, key, scenario))
        finally:
            ModelDeployment.unscoped_objects.filter(pk=deployment.pk).update(desired_replicas=0, min_replicas=0)
            reconcile.reconcile_deployment(deployment.pk, backend)
            stop(gateway.proc)
    return figures


def _scale_down_under_traffic(plane: ControlPlane, gateway_url: str, key: str, scenario: Scenario) -> dict[str, Any]:
    """The load step again, then a paced client while the count comes down to 1, then a burst once it is 0, with the
    control plane reconciling at the worker's cadence."""
    plane.worker_cadence = True
    threads, _ = _load(gateway_url, key, scenario.clients, scenario.load_s / 2)
    plane.run_until(lambda d, r, e: not any(t.is_alive() for t in threads), scenario.load_s + 60, "the second load")
    peak = plane.log[-1][1]
    # One request at a time with pauses (about a third of a replica's target), so the count goes down to 1.
    during: list[int] = []
    stop = threading.Event()

    def paced() -> None:
        while not stop.is_set():
            during.append(_chat(gateway_url, key))
            stop.wait(scenario.stall_ms / 1000)

    client = threading.Thread(target=paced, daemon=True)
    client.start()
    plane.run_until(lambda d, r, e: d == 1 and r == 1, 90, "the scale-down to 1 under traffic")
    until = time.monotonic() + 3  # the drained replicas stop meanwhile; the client keeps sending
    plane.run_until(lambda d, r, e: time.monotonic() > until, 10, "the drained replicas")
    stop.set()  # the control plane keeps running while the client's last request finishes (it may be held)
    plane.run_until(lambda d, r, e: not client.is_alive(), 90, "the paced client's last request")
    # The moment the API reports zero (desired and ready 0), as a client watching it would see it.
    plane.run_until(lambda d, r, e: d == 0 and r == 0, 60, "zero replicas again")
    answers: list[int] = []
    gate = threading.Barrier(BURST)

    def one() -> None:
        gate.wait()
        answers.append(_chat(gateway_url, key))

    burst = [threading.Thread(target=one, daemon=True) for _ in range(BURST)]
    for thread in burst:
        thread.start()
    plane.run_until(lambda d, r, e: not any(t.is_alive() for t in burst), 90, "the burst at zero")
    sent = during + answers
    return {
        "scale_down_from": peak,
        "scale_down_requests": len(sent),
        "failed_during_scale_down": sum(1 for status in sent if status != 200),
        "burst_ok": sum(1 for status in answers if status == 200),
    }


def _changes(log: list[tuple[float, int, int]], origin: float) -> list[tuple[float, int, int]]:
    """The (seconds from the load step, desired, ready) points where either count changed."""
    points: list[tuple[float, int, int]] = []
    for t, desired, ready in log:
        if t >= origin - 1 and (not points or points[-1][1:] != (desired, ready)):
            points.append((round(t - origin, 1), desired, ready))
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4, help="concurrent bounded clients (the load step)")
    parser.add_argument("--load-s", type=float, default=16.0, help="how long the load lasts")
    parser.add_argument("--target-concurrency", type=int, default=2)
    parser.add_argument("--max-num-seqs", type=int, default=2, help="requests a replica runs at once; the rest queue")
    parser.add_argument("--stall-ms", type=int, default=600, help="how long each request holds its replica")
    parser.add_argument("--max-replicas", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print the runs as JSON (with their timelines)")
    args = parser.parse_args()
    scenario = Scenario(
        args.clients, args.load_s, args.target_concurrency, args.max_num_seqs, args.stall_ms, args.max_replicas
    )
    if scenario.needed >= scenario.max_replicas:
        raise SystemExit(f"max_replicas {scenario.max_replicas} must be above the {scenario.needed} replicas needed")

    _admin_sql(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    _admin_sql(f'CREATE DATABASE "{BENCH_DB}"')
    base_prefix = os.environ.get("FRONTDOOR_REDIS_PREFIX", "fd-bench")
    os.environ.update(
        WINDOWS,
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}",
        DJANGO_SETTINGS_MODULE="controlplane.settings",
        FRONTDOOR_BACKEND="local",
        **bench_queues(f"{base_prefix}-autoscale-{uuid.uuid4().hex[:6]}"),
    )
    import django

    django.setup()
    import logging

    logging.getLogger("frontdoor").setLevel(logging.WARNING)  # one publish line per step would bury the figures
    from django.core.management import call_command
    from django.db import connections

    runs: list[dict[str, Any]] = []
    try:
        call_command("migrate", verbosity=0)
        for _ in range(max(1, args.runs)):
            with tempfile.TemporaryDirectory(prefix="fd-bench-autoscale-") as tmp:
                started = time.monotonic()
                runs.append(run_once(scenario, Path(tmp)))
                runs[-1]["run_s"] = round(time.monotonic() - started, 1)
    finally:
        _cleanup_redis()
        connections.close_all()
        _admin_sql(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')

    if args.json:
        print(json.dumps({"scenario": scenario.__dict__, "runs": runs}, indent=2))
        return
    per_replica = TARGET_UTILISATION * scenario.target_concurrency
    print(
        f"{scenario.clients} clients x {scenario.load_s:.0f} s, {scenario.stall_ms} ms per request, "
        f"max_num_seqs {scenario.max_num_seqs}, target_concurrency {scenario.target_concurrency} "
        f"(per-replica target {per_replica:.1f}), max_replicas {scenario.max_replicas}; "
        f"needed = ceil({scenario.clients} / {per_replica:.1f})"
        f" = {scenario.needed}"
    )
    for name, label in FIELDS:
        values = [run[name] for run in runs]
        print(f"{label:55s} median {statistics.median(values):7.2f}   runs {values}")
    print(f"{'run time (s)':55s} {[run['run_s'] for run in runs]}")
    for i, run in enumerate(runs, 1):
        print(f"run {i} (t from load step, desired, ready): " + " ".join(f"{t}:{d}/{r}" for t, d, r in run["timeline"]))


def bench_queues(name: str) -> dict[str, str]:
    """The environment giving a run a Redis prefix, Celery queues and Celery keys of its own: the tasks the services
    send (reconciles, snapshot publishes, batch prepares) wait there, which nothing consumes (the run does their work
    itself), and an installation on this Redis neither sees them nor loses any of its own."""
    return {
        "FRONTDOOR_REDIS_PREFIX": name,
        "FRONTDOOR_CELERY_QUEUE": name,
        "FRONTDOOR_CELERY_KEY_PREFIX": f"{name}-celery:",
        "FRONTDOOR_SNAPSHOT_PUBLISH": "inline",
    }


def _cleanup_redis() -> None:
    """Drop this run's keys: its own prefix's, and its Celery keys (queues included); never anything else."""
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    for pattern in (f"{settings.FRONTDOOR_REDIS_PREFIX}:*", f"{settings.FRONTDOOR_CELERY_KEY_PREFIX}*"):
        for key in client.scan_iter(match=pattern, count=1000):
            client.delete(key)
    client.close()


if __name__ == "__main__":
    main()
