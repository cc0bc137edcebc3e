"""``python -m localagent [--stop-all]``: run the local agent (settings from the environment)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from controlplane.contracts.env import ImproperlyConfiguredEnv, env_str
from localagent.agent import run, stop_all
from localagent.config import AgentConfig
from localagent.sandbox import resolve_run_as


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localagent", description=__doc__)
    parser.add_argument("--stop-all", action="store_true", help="stop every replica this state dir knows of, then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=env_str("LOG_LEVEL", "INFO").upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = AgentConfig.from_env()
        resolve_run_as(config.run_as)  # refuse a run-as user it cannot use before touching any replica
    except ImproperlyConfiguredEnv as exc:
        print(f"local agent: {exc}", file=sys.stderr)
        return 2
    return stop_all(config) if args.stop_all else run(config)


if __name__ == "__main__":
    sys.exit(main())
