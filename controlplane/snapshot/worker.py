"""``python -m controlplane.snapshot.worker``: the snapshot publisher's own Celery worker.

It consumes ``FRONTDOOR_SNAPSHOT_QUEUE`` alone, one task at a time (``--pool solo``): reconcile, rollup and batch
tasks go to other queues and other workers, so a full worker never delays a revocation. Several of them (one per
host) are safe: the publisher's lock lets one build at a time. Extra arguments go to ``celery worker``.
"""

from __future__ import annotations

import os
import sys


def command(argv: list[str]) -> list[str]:
    """The ``python -m celery`` command line of the publisher's worker."""
    from django.conf import settings

    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "controlplane.celery:app",
        "worker",
        "-Q",
        settings.FRONTDOOR_SNAPSHOT_QUEUE,
        "--pool",
        "solo",
        "--without-gossip",
        "--without-mingle",
        "--hostname",
        f"snapshot-publisher-{os.getpid()}@%h",
        *argv,
    ]


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    args = command(sys.argv[1:])
    os.execv(args[0], args)  # noqa: S606 (our own interpreter, no shell: nothing to quote)


if __name__ == "__main__":
    main()
