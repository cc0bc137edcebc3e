"""Autoscaling benchmark on the local backend: time from a load step to the first added replica, peak replicas,
time back to zero once idle, and the cold-start time of a request held while a deployment wakes from zero.

``python bench/autoscale.py [--runs 3] [--json]``

Each run is the end-to-end scenario of ``tests/test_autoscale_e2e.py`` (a real local agent, model-server replicas
with a 600 ms stall per request, a real gateway, Redis and Postgres; the autoscale tick, reconcile and config
publish in a loop as the beat schedule would run them), with short windows so a run takes about 40 s: stable
window 6 s, panic window 2 s, scale-to-zero grace 4 s. The scenario prints its figures on one line; this script
runs it ``--runs`` times and prints each run and the median. Needs PostgreSQL and Redis as for the tests; uses
``REDIS_URL`` / ``FRONTDOOR_REDIS_PREFIX`` / ``FRONTDOOR_TEST_DATABASE`` from the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MARK = "AUTOSCALE-FIGURES "
FIELDS = (
    ("to_first_added_replica_s", "load step -> first added replica (s)"),
    ("peak_desired", "peak desired replicas (max 3; overshoot = peak - needed)"),
    ("to_zero_after_load_s", "load gone -> zero replicas (s)"),
    ("cold_start_s", "request at zero -> served (cold start, s)"),
    ("first_replica_s", "new deployment -> first ready replica (s)"),
)


def run_once() -> dict[str, Any]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("FRONTDOOR_TEST_DATABASE", "test_fd_bench_autoscale")
    env.setdefault("FRONTDOOR_REDIS_PREFIX", "fd-bench-autoscale")
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:randomly", "tests/test_autoscale_e2e.py"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    for line in done.stdout.splitlines():
        if line.startswith(MARK):
            return dict(json.loads(line[len(MARK) :]))
    tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
    raise SystemExit(f"the scenario failed (exit {done.returncode}):\n{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the runs as JSON")
    args = parser.parse_args()
    runs = [run_once() for _ in range(max(1, args.runs))]
    if args.json:
        print(json.dumps(runs, indent=2))
        return
    # The load: 4 clients, each keeping one 600 ms request in flight, at a target of 0.7 per replica, wants
    # ceil(4 / 0.7) = 6 replicas, capped at max 3; so "needed" is 3 and overshoot is peak - 3 (never above 0 here).
    for name, label in FIELDS:
        values = [run[name] for run in runs]
        print(f"{label:58s} median {statistics.median(values):7.2f}   runs {values}")


if __name__ == "__main__":
    main()
