"""The control plane's periodic work for end-to-end tests: run in this process (``ControlPlane``), exactly as the
Celery tasks would call it, or by a real ``celery worker --beat`` on this run's queue and test database."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import connection

from controlplane.celery import app
from controlplane.snapshot.publisher import publish_config
from deployments.backends.local import LocalBackend
from deployments.models import ModelDeployment
from deployments.reconcile import engine as reconcile
from deployments.scaling import tick as autoscale
from deployments.scaling.kpa import TICK_S

REPO = Path(__file__).resolve().parents[2]


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


@contextlib.contextmanager
def celery_worker_with_beat(
    redis_url: str, redis_prefix: str, tmp_path: Path, **overrides: str
) -> Iterator[Callable[[], str]]:
    """Start ``celery worker --beat`` on this run's queue and test database; returns a reader of its log.

    ``overrides``: environment variables of the worker replacing the defaults below (resync, windows)."""
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": app.conf.broker_url,
        "REDIS_URL": redis_url,
        "FRONTDOOR_REDIS_PREFIX": redis_prefix,
        "FRONTDOOR_BACKEND": "local",
        "FRONTDOOR_KEY_PEPPER": settings.FRONTDOOR_KEY_PEPPER,
        "FRONTDOOR_RESYNC_SECONDS": "1",
        "FRONTDOOR_SCALE_TO_ZERO_GRACE_S": "4",
        "FRONTDOOR_AUTOSCALE_STABLE_WINDOW_S": "6",
        "FRONTDOOR_AUTOSCALE_PANIC_WINDOW_S": "2",
        **overrides,
    }
    # The run's own default queue (kombu's client adds the run's key prefix): drop what earlier tests left queued.
    with app.connection_for_write() as conn:
        conn.default_channel.client.delete(app.conf.task_default_queue)
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "controlplane", "worker", "--beat", "--pool=solo",
             "-Q", app.conf.task_default_queue, "-s", str(tmp_path / "beat-schedule"), "-n", f"{redis_prefix}@%h",
             "--without-heartbeat", "--without-mingle", "--without-gossip", "-l", "INFO"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        yield lambda: log_path.read_text(errors="replace")[-4000:]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        with app.connection_for_write() as conn:
            conn.default_channel.client.delete(app.conf.task_default_queue)
