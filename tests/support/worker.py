"""Real Celery workers for tests that need the whole control plane running: the worker (with an embedded beat), and
the snapshot publisher's own worker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class Worker:
    """``celery -A controlplane worker --pool=solo -B`` against the test database and this test's Redis prefix.

    It consumes the run's own Celery queue, and its beat sends there: the run's queue and Celery key prefix come with
    ``os.environ`` (tests/support/isolation.py), so an installation's worker on this Redis never sees these tasks.
    """

    name = "worker"

    def __init__(self, tmp: Path, prefix: str, env: dict[str, str]) -> None:
        from django.conf import settings
        from django.db import connection

        self.log_path = tmp / f"{self.name}.log"
        self.env = {
            **os.environ,
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{connection.settings_dict['NAME']}",
            "REDIS_URL": settings.REDIS_URL,
            "CELERY_BROKER_URL": settings.REDIS_URL,
            "FRONTDOOR_REDIS_PREFIX": prefix,
            "FRONTDOOR_RESYNC_SECONDS": "1",
            "FRONTDOOR_ROLLUP_SECONDS": "1",
            "LOG_LEVEL": "WARNING",
            **env,
        }
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command(tmp), cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def command(self, tmp: Path) -> list[str]:
        from django.conf import settings

        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "controlplane",
            "worker",
            "--pool=solo",
            "-Q",
            settings.CELERY_TASK_DEFAULT_QUEUE,
            "-B",
            "-s",
            str(tmp / "beat-schedule"),
            "-n",
            f"browser-{uuid.uuid4().hex[:6]}@%h",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "WARNING",
        ]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


class SnapshotPublisher(Worker):
    """``python -m controlplane.snapshot.worker``: the publisher's own worker on the run's snapshot queue.

    Processes that should queue their marks for it need ``FRONTDOOR_SNAPSHOT_PUBLISH=queue`` (the suite's default is
    ``inline``): pass it in ``env`` for it and to the other processes, and set it in the test's settings.
    """

    name = "publisher"

    def command(self, tmp: Path) -> list[str]:
        hostname = f"publisher-{uuid.uuid4().hex[:6]}@%h"
        return [
            sys.executable,
            "-m",
            "controlplane.snapshot.worker",
            "-n",
            hostname,
            "--without-heartbeat",
            "-l",
            "WARNING",
        ]
