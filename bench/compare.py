"""Gateway figures of two revisions in one run: ``bench/gateway.py`` from a git worktree of each, alternating.

``python bench/compare.py --before <rev> [--after <rev>|--after-tree .] [--rounds 3]``

Each round runs ``bench/gateway.py --skip-litellm`` once for "before" and once for "after" (the order swaps every
round, so neither side always runs on a warmer machine), each in its own worktree so that its gateway, model
server and benchmark code are that revision's. It prints both sides' runs and medians of Frontdoor's requests/s at
full load and added p50 at low load, and the after/before ratio of each median. Worktrees live under
``var/bench/worktrees`` and are reused; ``--after-tree .`` measures the working tree as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORKTREES = ROOT / "var" / "bench" / "worktrees"
FIGURES = ("frontdoor_rps", "frontdoor_added_p50_ms", "frontdoor_over_direct_rps")


def worktree(rev: str) -> Path:
    """A detached worktree of ``rev`` (made once, then reused)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    path = WORKTREES / commit[:12]
    if not path.exists():
        WORKTREES.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=ROOT, check=True)
    return path


def run_once(tree: Path, passthrough: list[str]) -> dict[str, Any]:
    """One ``bench/gateway.py`` run from ``tree``; its own modules first on the path, for it and its children."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        cmd = [sys.executable, str(tree / "bench" / "gateway.py"), "--skip-litellm", "--json-file", out.name]
        subprocess.run([*cmd, *passthrough], cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
        document: dict[str, Any] = json.loads(Path(out.name).read_text())
    runs = {(r["target"], r["phase"]): r for r in document["runs"]}
    return {
        "frontdoor_rps": runs[("frontdoor", "throughput")]["result"]["rps"],
        "frontdoor_added_p50_ms": document["summary"]["frontdoor_added_p50_ms"],
        "frontdoor_over_direct_rps": document["summary"]["frontdoor_over_direct_rps"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/compare.py", description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the revision measured as 'before'")
    parser.add_argument("--after", default="HEAD", help="the revision measured as 'after' (default HEAD)")
    parser.add_argument("--after-tree", type=Path, help="measure this tree as 'after' instead of a revision")
    parser.add_argument("--rounds", type=int, default=3)
    args, passthrough = parser.parse_known_args(argv)
    trees = {"before": worktree(args.before), "after": args.after_tree.resolve() if args.after_tree else None}
    trees["after"] = trees["after"] or worktree(args.after)
    figures: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    for round_no in range(args.rounds):
        order = ("before", "after") if round_no % 2 == 0 else ("after", "before")
        for side in order:
            result = run_once(trees[side], passthrough)
            figures[side].append(result)
            print(f"round {round_no + 1} {side:6}: " + "  ".join(f"{k}={v}" for k, v in result.items()), flush=True)
    print()
    print(f"{'median':24} {'before':>10} {'after':>10} {'after/before':>13}")
    for name in FIGURES:
        before = statistics.median(r[name] for r in figures["before"])
        after = statistics.median(r[name] for r in figures["after"])
        ratio = after / before if before else float("nan")
        print(f"{name:24} {before:>10.3f} {after:>10.3f} {ratio:>13.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
