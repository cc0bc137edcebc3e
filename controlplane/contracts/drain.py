"""Stopping a replica last: gateways acknowledge the snapshot versions they load, backends wait for them.

A replica leaves the routing table before its process stops (docs/autoscaling.md, "The order of a scale-down"):

1. the backend stops reporting the replica as ready, so the next reconcile drops its endpoint and the control plane
   publishes a snapshot without it (version ``V``);
2. every gateway process records the version it has loaded in the hash ``<prefix>:gateway:acks`` (field: its
   gateway id, one per process; value: ``{"version": V, "ts": <epoch s>}``), at once after each swap and every
   ``ACK_INTERVAL_S`` besides, and removes its field when it exits cleanly;
3. the backend stops the replica once every live gateway acknowledged a version ``>= V`` and the replica's in-flight
   requests have finished, or once its drain timeout has passed.

A gateway whose acknowledgement is older than the acknowledgement timeout is gone; a gateway that keeps lagging behind
``V`` is waited for at most that timeout after ``V`` was first seen. Either way a stuck gateway delays a scale-down by
a bound, never forever. Django-free: the local agent and the gateway import it.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from controlplane.contracts import redis_names
from controlplane.contracts.snapshot import DELETING

ACK_INTERVAL_S = 1.0  # how often a gateway refreshes its acknowledgement (the version poll runs every second too)
DEFAULT_ACK_TIMEOUT_S = 15.0  # FRONTDOOR_DRAIN_ACK_TIMEOUT_S
DEFAULT_DRAIN_TIMEOUT_S = 120.0  # FRONTDOOR_DRAIN_TIMEOUT_S: the longest a replica drains before it is stopped


# The keys the drain rule reads, spelled in redis_names; backends name them through this module.
acks_key = redis_names.gateway_acks_key
config_version_key = redis_names.config_version_key
config_snapshot_key = redis_names.config_snapshot_key


def new_gateway_id() -> str:
    """An id for one gateway process: readable (host, pid) and unique across restarts (a random suffix)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class Ack:
    """One gateway's acknowledgement: the snapshot version it routes with, and when it said so (epoch seconds)."""

    version: int
    ts: float


def encode_ack(version: int, ts: float) -> bytes:
    return orjson.dumps({"version": version, "ts": ts})


def parse_acks(raw: Mapping[Any, Any]) -> dict[str, Ack]:
    """The acks hash as read (bytes or str fields); a malformed entry is skipped rather than trusted."""
    acks: dict[str, Ack] = {}
    for field_name, value in raw.items():
        name = field_name.decode(errors="replace") if isinstance(field_name, bytes) else str(field_name)
        try:
            doc = orjson.loads(value)
            acks[name] = Ack(version=int(doc["version"]), ts=float(doc["ts"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return acks


def routed_endpoints(doc: Mapping[str, Any]) -> frozenset[str]:
    """Every endpoint a gateway routes to with this snapshot document (``controlplane.contracts.snapshot``, read
    defensively): the endpoints of revisions with a weight above 0 of deployments not being deleted (what
    ``gateway/snapshot.py`` keeps), without trailing slashes."""
    found: set[str] = set()
    deployments = doc.get("deployments") or {}
    for deployment in deployments.values() if isinstance(deployments, Mapping) else ():
        if not isinstance(deployment, Mapping) or deployment.get("state") == DELETING:
            continue
        for revision in deployment.get("revisions") or ():
            if not isinstance(revision, Mapping) or int(revision.get("weight") or 0) <= 0:
                continue
            found.update(str(e).rstrip("/") for e in revision.get("endpoints") or ())
    return frozenset(found)


def lagging_gateways(
    acks: Mapping[str, Ack], version: int, unrouted_at: float, now: float, ack_timeout_s: float
) -> list[str]:
    """The gateways that may still route to an endpoint first left out of snapshot ``version`` at ``unrouted_at``.

    A gateway counts until it acknowledges ``version`` or later; one silent for ``ack_timeout_s`` is gone, and none
    is waited for longer than ``ack_timeout_s`` after ``unrouted_at`` (times in epoch seconds).
    """
    if now - unrouted_at >= ack_timeout_s:
        return []
    return sorted(gateway for gateway, ack in acks.items() if ack.version < version and now - ack.ts < ack_timeout_s)


def stale_gateways(acks: Mapping[str, Ack], now: float, keep_s: float) -> Iterable[str]:
    """Gateways silent for longer than ``keep_s``: their fields can go (a crashed process never removes its own)."""
    return [gateway for gateway, ack in acks.items() if now - ack.ts > keep_s]
