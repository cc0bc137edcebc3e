"""Each gateway process acknowledges the snapshot version it has loaded (controlplane/contracts/drain.py), so a
backend stops a replica only once no gateway routes to it; a gateway that exits cleanly withdraws its field."""

from __future__ import annotations

import time
from pathlib import Path

import redis

from controlplane.contracts.drain import Ack, acks_key, parse_acks
from tests.support.gateway import World, start_gateway, stop


def acks(client: redis.Redis, prefix: str) -> dict[str, Ack]:
    return parse_acks(client.hgetall(acks_key(prefix)))


def wait_for_ack(client: redis.Redis, prefix: str, version: int, count: int) -> dict[str, Ack]:
    """The acks once ``count`` gateways acknowledged ``version`` or later (bounded wait)."""
    deadline = time.monotonic() + 10
    while True:
        found = acks(client, prefix)
        if sum(ack.version >= version for ack in found.values()) >= count:
            return found
        assert time.monotonic() < deadline, f"acknowledgements {found}, wanted {count} at version {version}"
        time.sleep(0.02)


def test_every_gateway_process_acknowledges_each_version_and_withdraws_on_exit(
    world: World, redis_client: redis.Redis, prefix: str, session_tmp: Path
) -> None:
    first = start_gateway(session_tmp, prefix)
    second = start_gateway(session_tmp, prefix)
    try:
        version = world.publish(first, second)
        found = wait_for_ack(redis_client, prefix, version, 2)
        acked = {gateway for gateway, ack in found.items() if ack.version >= version}
        assert len(acked) >= 2  # one field per process (a session's other gateways may be among them)
        assert all(abs(time.time() - found[gateway].ts) < 60 for gateway in acked)

        later = world.publish(first, second)
        wait_for_ack(redis_client, prefix, later, 2)

        stop(first.proc)
        assert len(acked - set(acks(redis_client, prefix))) == 1, "the stopped gateway's field is gone, no other"
    finally:
        stop(first.proc)
        stop(second.proc)
