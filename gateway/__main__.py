"""``python -m gateway --host 127.0.0.1 --port 8001 [--workers N]``: the gateway under uvicorn.

uvloop + httptools, uvicorn's access log off (the gateway writes its own JSON line per request), no proxy-headers
middleware (nothing reads the client address). The address and port go to ``FRONTDOOR_GATEWAY_HOST`` and
``FRONTDOOR_GATEWAY_PORT`` (their defaults too), which every worker's ``GatewayConfig`` reads: the address policy
refuses external endpoints that point back at the gateway's own listener. ``--workers`` goes to
``FRONTDOOR_GATEWAY_WORKERS`` likewise: each worker takes its own metrics port among the N from
``FRONTDOOR_GATEWAY_METRICS_PORT`` (gateway/metrics.py says why one each).
"""

from __future__ import annotations

import argparse
import os

import uvicorn

from controlplane.contracts.env import env_int, env_str


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway", description="Frontdoor inference gateway")
    parser.add_argument("--host", default=env_str("FRONTDOOR_GATEWAY_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=env_int("FRONTDOOR_GATEWAY_PORT", 8001))
    parser.add_argument("--workers", type=int, default=env_int("FRONTDOOR_GATEWAY_WORKERS", 1))
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    # Workers (spawned processes) inherit the environment: each learns the listener it must refuse to call.
    os.environ["FRONTDOOR_GATEWAY_HOST"] = args.host
    os.environ["FRONTDOOR_GATEWAY_PORT"] = str(args.port)
    os.environ["FRONTDOOR_GATEWAY_WORKERS"] = str(args.workers)
    uvicorn.run(
        "gateway.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=args.log_level,
        server_header=False,
        date_header=False,
        proxy_headers=False,  # the gateway never reads the client address: skip X-Forwarded-* rewriting
    )


if __name__ == "__main__":
    main()
