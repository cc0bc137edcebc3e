"""Console benchmark against another commit, in one run: ``bench/console.py`` here and in a git worktree of it.

    .venv/bin/python bench/console_compare.py --against <rev> [--tenants 100] [--deployments 1000] [--runs 20]
        [--rounds 2]

Both sides seed the same data set into a database of their own and render the same pages with Django's test client
(server time only; see bench/console.py). The sides take turns ``--rounds`` times, so a machine that slows down
during the run slows both; each page's p95 is the median of its rounds. It prints each page's p95 on both sides and
their ratio, against the bound "at most twice the other commit's". The worktree (var/bench/console-<sha>) is made
once and kept; it runs with this checkout's interpreter and packages, its own code first on the path.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKTREES = ROOT / "var" / "bench"
BOUND = 2.0
# One line of bench/console.py's table: label, status, queries, p50, p95, verdict.
ROW = re.compile(r"^(?P<label>\S.*?)\s+(?P<status>\d{3})\s+(?P<queries>\d+)\s+(?P<p50>[\d.]+)\s+(?P<p95>[\d.]+)\s+\S+$")


def worktree(rev: str) -> tuple[Path, str]:
    sha = subprocess.run(["git", "rev-parse", rev], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
    path = WORKTREES / f"console-{sha[:10]}"
    if not path.exists():
        WORKTREES.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(path), sha], cwd=ROOT, check=True, capture_output=True
        )
    return path, sha


def bench(tree: Path, database: str, args: argparse.Namespace) -> dict[str, tuple[int, float]]:
    """Run bench/console.py of ``tree``; its pages' (queries, p95 ms)."""
    argv = [sys.executable, str(tree / "bench" / "console.py"), "--tenants", str(args.tenants)]
    argv += ["--deployments", str(args.deployments), "--runs", str(args.runs)]
    env = {**os.environ, "PYTHONPATH": str(tree), "FRONTDOOR_BENCH_DATABASE": database}
    done = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench/console.py in {tree} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    rows = {}
    for line in done.stdout.splitlines():
        if (found := ROW.match(line)) is not None:
            rows[found["label"]] = (int(found["queries"]), float(found["p95"]))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/console_compare.py", description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="the commit to compare with (e.g. the parent of a change)")
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--deployments", type=int, default=1000, help="per tenant")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2, help="turns each side takes")
    args = parser.parse_args()
    base, sha = worktree(args.against)
    here: dict[str, list[float]] = {}
    there: dict[str, list[float]] = {}
    queries: dict[str, dict[str, int]] = {"then": {}, "now": {}}
    for _ in range(args.rounds):
        for tree, database, side, into in (
            (base, "bench_fd_console_base", "then", there),
            (ROOT, "bench_fd_console_head", "now", here),
        ):
            for label, (n_queries, p95) in bench(tree, database, args).items():
                into.setdefault(label, []).append(p95)
                queries[side][label] = n_queries
    print(f"\ncompared with {sha[:10]} ({args.tenants} tenants x {args.deployments} deployments, {args.rounds} rounds)")
    print(f"{'page':<22} {'queries':>9} {'p95 then':>9} {'p95 now':>9} {'ratio':>6}  bound ≤ {BOUND:.0f}×")
    worst = 0.0
    for label in here:
        if label not in there:
            print(f"{label:<22} {'':>9} {'—':>9} {statistics.median(here[label]):>9.1f} {'new':>6}")
            continue
        then, now = statistics.median(there[label]), statistics.median(here[label])
        ratio = now / then if then > 0 else float("inf")
        worst = max(worst, ratio)
        before, after = queries["then"][label], queries["now"][label]
        verdict = "ok" if ratio <= BOUND else "OVER"
        print(f"{label:<22} {before:>4} → {after:<3} {then:>9.1f} {now:>9.1f} {ratio:>5.2f}×  {verdict}")
    return 0 if worst <= BOUND else 1


if __name__ == "__main__":
    sys.exit(main())
