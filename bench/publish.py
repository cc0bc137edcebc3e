"""Config snapshot publishing at scale, two revisions side by side: build and store, gateway load, a mass change, and
the REST lists.

``python bench/publish.py [--before 4f13a80] [--after REV] [--changes 1000] [--before-changes 100] [--writers 4]
[--json-file out.json]``

Each side (a git worktree of ``--before``; the working tree as it is, or a worktree of ``--after``) runs as a child
process, this checkout's ``bench/publish_side.py`` with that tree's packages first on ``sys.path`` (and this checkout's
root off it), against its own Postgres database (created and migrated by the side, dropped by it and again here) and its
own Redis prefix, Celery queue and Celery key prefix, all of them deleted at the end. It populates ``--tenants``
tenants, ``--deployments`` deployments (2 routed revisions of weight 50 each, one endpoint each) and ``--keys`` API
keys: the first tenant holds a tenth of the deployments and of the keys, the others share the rest round-robin. Then,
per side:

1. the full build (best of 3) and the bytes it stores; a full ``publish_config()`` (build + store); with sections,
   the build of one tenant's section (the big tenant's, a small one's);
2. a gateway ``SnapshotStore``: ``reload()`` of a fresh store (median of 3, after one uncounted), the memory one
   loaded store retains (tracemalloc, a separate pass), the longest event-loop stall while it loads (a 1 ms ticker's
   largest gap); with sections, a reload after one small tenant's section changed;
3. ``--changes`` commits, each ``save(update_fields=["max_concurrent_requests"])`` of a big-tenant deployment, from
   ``--writers`` threads: the rebuilds (``config:seq`` moved), the time the commits took and the time until a
   listening gateway store has them all; halfway, a small tenant's key is revoked and the time from the revoke's
   return until a real gateway process of the side's tree refuses it (401; 10 ms polls, 30 s at most) is measured.
   A revision that publishes on commit does so in the committing thread; one with the queued publisher runs its worker
   (``python -m controlplane.snapshot.worker``) as a child process, and its counters (``config:stats``) are shown.
   The before side makes ``--before-changes`` commits (100): each of its commits rebuilds the whole snapshot, so
   1,000 take about an hour at full size on two cores, and a tenth shows the same per-commit cost;
4. the REST lists of the big tenant (deployments, keys, one deployment's revisions): 200 requests each through
   ``django.test.Client`` in-process (no network), signed in as the tenant's owner; p50 and p95 (target p95 <= 50 ms).

Both sides run this checkout's ``bench/publish_side.py``, so both are measured by the same code. ``--tenants 20
--deployments 200 --keys 2000 --changes 50`` makes a quick run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: bench.* from this checkout
from bench.compare import worktree
from bench.publish_side import SIDES, drop_side, side_names

ROOT = Path(__file__).resolve().parents[1]
SIDE_RUNNER = ROOT / "bench" / "publish_side.py"

# (figure, label, unit) in the order the table prints them; a side that has no such figure shows "-".
FIGURES = (
    ("build_ms", "full build + encode, best of 3", "ms"),
    ("stored_bytes", "stored size", "MiB"),
    ("publish_first_ms", "publish_config(), into an empty store", "ms"),
    ("publish_ms", "publish_config(), best of 3 repeats", "ms"),
    ("build_big_tenant_ms", "one tenant's build + encode: the big one", "ms"),
    ("build_small_tenant_ms", "one tenant's build + encode: a small one", "ms"),
    ("load_ms", "gateway reload(), fresh store, median of 3", "ms"),
    ("load_stall_ms", "longest event-loop stall during a load", "ms"),
    ("store_bytes", "memory one loaded store retains", "MiB"),
    ("incremental_load_ms", "reload after one small tenant changed", "ms"),
    ("incremental_stall_ms", "longest stall during that reload", "ms"),
    ("change_count", "mass change: commits", ""),
    ("change_commits_s", "mass change: the commits' wall time", "s"),
    ("change_visible_s", "mass change: until the gateway has all", "s"),
    ("rebuilds", "mass change: rebuilds (config:seq delta)", ""),
    ("revoke_call_ms", "revoke(): the call itself", "ms"),
    ("revoke_delay_ms", "revoke() return -> gateway has it revoked", "ms"),
    ("publisher_builds", "publisher counters: builds in the change", ""),
    ("publisher_sections", "publisher counters: sections built", ""),
    ("publisher_last_build_ms", "publisher counters: last build", "ms"),
    ("rest_deployments_p50_ms", "GET deployments (big tenant) p50", "ms"),
    ("rest_deployments_p95_ms", "GET deployments (big tenant) p95", "ms"),
    ("rest_keys_p50_ms", "GET keys (big tenant) p50", "ms"),
    ("rest_keys_p95_ms", "GET keys (big tenant) p95", "ms"),
    ("rest_revisions_p50_ms", "GET one deployment's revisions p50", "ms"),
    ("rest_revisions_p95_ms", "GET one deployment's revisions p95", "ms"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/publish.py", description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="4f13a80", help="the revision measured as 'before'")
    parser.add_argument("--after", help="the revision measured as 'after' (default: the working tree as it is)")
    parser.add_argument("--sides", default="before,after", help="which sides to run (development)")
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--deployments", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--changes", type=int, default=1000, help="commits in the mass change")
    parser.add_argument(
        "--before-changes",
        type=int,
        default=100,
        help="commits in the before side's mass change (each rebuilds the whole snapshot in the committing thread: "
        "1,000 of them take about an hour at full size on two cores)",
    )
    parser.add_argument("--writers", type=int, default=4, help="threads committing the mass change")
    parser.add_argument("--json-file", type=Path)
    args = parser.parse_args(argv)
    if (
        min(args.tenants, args.deployments, args.keys) < 2
        or min(args.changes, args.before_changes) < 1
        or args.writers < 1
    ):
        parser.error("at least 2 tenants, deployments and keys (a big tenant and a small one), 1 change and 1 writer")
    return compare(args)


def _revision(rev: str) -> str:
    done = subprocess.run(["git", "rev-parse", "--short=12", rev], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or rev


def compare(args: argparse.Namespace) -> int:
    sides = [s for s in SIDES if s in args.sides.split(",")]
    trees = {"before": worktree(args.before), "after": worktree(args.after) if args.after else ROOT}
    revisions = {"before": _revision(args.before), "after": _revision(args.after or "HEAD")}
    if not args.after:
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
        revisions["after"] = f"working tree ({revisions['after']}{' + uncommitted changes' if dirty else ''})"
    report: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "loadavg_start": os.getloadavg(),
        "revisions": revisions,
        "trees": {side: str(tree) for side, tree in trees.items()},
        "scale": {k: getattr(args, k) for k in ("tenants", "deployments", "keys", "changes", "writers")},
        "before_changes": args.before_changes,
        "sides": {},
        "errors": {},
    }
    print(f"{report['date']}  load average {_load()}")
    print(f"before: {revisions['before']} ({trees['before']})\nafter:  {revisions['after']} ({trees['after']})")
    print(
        f"{args.tenants} tenants, {args.deployments} deployments, {args.keys} keys; {args.changes} changes "
        f"({args.before_changes} on the before side) from {args.writers} writers\n",
        flush=True,
    )
    run_id = os.getpid()
    for side in sides:
        prefix, database = side_names(side, run_id)
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = [
                sys.executable,
                str(SIDE_RUNNER),
                f"--side={side}",
                f"--tree={trees[side]}",
                f"--run-id={run_id}",
                f"--out={out.name}",
                *(f"--{k}={v}" for k, v in report["scale"].items() if k != "changes"),
                f"--changes={args.before_changes if side == 'before' else args.changes}",
            ]
            # The tree's own packages first; neither the runner's directory (bench/gateway.py would shadow the
            # gateway package) nor the current directory on the path at all.
            env = {**os.environ, "PYTHONPATH": str(trees[side]), "PYTHONSAFEPATH": "1"}
            try:
                returncode = run_child(cmd, trees[side], env)
                text = Path(out.name).read_text()
                if returncode != 0 or not text:
                    report["errors"][side] = f"the {side} side exited with {returncode}"
                else:
                    report["sides"][side] = json.loads(text)
            finally:
                drop_side(prefix, database)
    report["loadavg_end"] = os.getloadavg()
    print_table(report)
    print(f"\n{datetime.datetime.now().astimezone().isoformat(timespec='seconds')}  load average {_load()}")
    if args.json_file:
        args.json_file.write_text(json.dumps(report, indent=2))
    return 1 if report["errors"] else 0


def run_child(cmd: list[str], cwd: Path, env: dict[str, str]) -> int:
    """Run one side; on Ctrl-C (which reaches it too) give it time to stop its worker and drop what it made."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _show(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if unit == "MiB":
        return f"{value / 2**20:.2f}"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def print_table(report: dict[str, Any]) -> None:
    figures = {side: report["sides"].get(side, {}).get("figures", {}) for side in SIDES}
    print(f"\n{'figure':48} {'before':>12} {'after':>12} {'after/before':>13}")
    for name, label, unit in FIGURES:
        before, after = figures["before"].get(name), figures["after"].get(name)
        if before is None and after is None:
            continue
        numbers = isinstance(before, int | float) and isinstance(after, int | float)
        ratio = f"{after / before:.3f}" if numbers and before else ""
        title = f"{label} ({unit})" if unit else label
        print(f"{title:48} {_show(before, unit):>12} {_show(after, unit):>12} {ratio:>13}")
    for side in SIDES:
        for note in report["sides"].get(side, {}).get("notes", []):
            print(f"{side}: {note}")
        if side in report["errors"]:
            print(f"{side}: FAILED: {report['errors'][side]}")


if __name__ == "__main__":
    sys.exit(main())
