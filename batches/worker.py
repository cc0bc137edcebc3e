"""``python -m batches.worker``: the batch workers' Celery worker, on ``FRONTDOOR_BATCH_QUEUE`` alone.

Batch runs take tens of seconds each (``FRONTDOOR_BATCH_TASK_SECONDS``), so they get workers of their own: the
reconciles, ticks and snapshot builds on the other queues never wait behind them. Each run sends its lines from a
thread pool (``FRONTDOOR_BATCH_CONCURRENCY``); ``--concurrency`` sets how many batches one worker runs at once.
Extra arguments go to ``celery worker``.
"""

from __future__ import annotations

import os
import sys


def command(argv: list[str]) -> list[str]:
    from django.conf import settings

    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "controlplane.celery:app",
        "worker",
        "-Q",
        settings.FRONTDOOR_BATCH_QUEUE,
        "--without-gossip",
        "--without-mingle",
        "--hostname",
        f"batch-worker-{os.getpid()}@%h",
        *argv,
    ]


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    args = command(sys.argv[1:])
    os.execv(args[0], args)  # noqa: S606 (our own interpreter, no shell: nothing to quote)


if __name__ == "__main__":
    main()
