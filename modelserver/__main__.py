"""``python -m modelserver --host 127.0.0.1 --port 9000 [flags]``: one process, uvicorn with uvloop + httptools."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import uvicorn

from modelserver.app import create_app
from modelserver.config import config_from_args


def main(argv: Sequence[str] | None = None) -> int:
    config = config_from_args(argv)
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(config),
        host=config.host,
        port=config.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=config.log_level,
        # uvicorn's default (None) waits for in-flight requests without bound; a stuck client must not keep a
        # stopping replica alive until the agent's SIGKILL, so the wait has an end of its own.
        timeout_graceful_shutdown=config.graceful_shutdown_s,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
