"""The gateway refuses external endpoints that point back at its own listeners, metrics ports included."""

from __future__ import annotations

import asyncio
import ipaddress

from gateway.config import GatewayConfig
from gateway.external import local_services


async def _no_lookups(host: str, port: int) -> list[str]:
    raise AssertionError(f"no name should need resolving here ({host}:{port})")


def test_its_inference_metrics_and_redis_listeners_are_refused() -> None:
    config = GatewayConfig(
        listen_host="127.0.0.1",
        listen_port=8001,
        metrics_host="127.0.0.1",
        metrics_port=9464,
        workers=2,
        redis_url="redis://127.0.0.1:6390/0",
    )
    pairs = asyncio.run(local_services(config, resolver=_no_lookups))
    loopback = ipaddress.ip_address("127.0.0.1")
    assert {(loopback, 8001), (loopback, 9464), (loopback, 9465), (loopback, 6390)} <= pairs


def test_a_disabled_metrics_listener_adds_nothing() -> None:
    config = GatewayConfig(
        listen_host="127.0.0.1", listen_port=8001, metrics_port=0, redis_url="redis://127.0.0.1:6390"
    )
    pairs = asyncio.run(local_services(config, resolver=_no_lookups))
    assert {port for _, port in pairs} == {8001, 6390}
