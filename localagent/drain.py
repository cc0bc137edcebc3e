"""Draining: a replica no longer wanted keeps running until no gateway can route to it and it has finished its work.

The rule (``controlplane/contracts/drain.py``): the agent stops reporting the replica as ready, so the next reconcile
publishes a snapshot without its endpoint; once that snapshot's version (or a later one) is acknowledged by every
live gateway and the replica has nothing in flight, it gets SIGTERM (SIGKILL ``stop_grace_s`` later). The drain
timeout bounds the whole wait, the acknowledgement timeout bounds the wait for a gateway that does not answer.

Nothing here blocks the agent's tick: the snapshot is read only when its version moved, and then only the sections
(``controlplane.contracts.snapshot``) whose version moved; a terminated replica is reaped on a later tick. A
draining replica that is wanted again with the same spec goes back into service at once.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from controlplane.contracts import drain as contract
from controlplane.contracts import snapshot
from controlplane.contracts.redis_names import config_sections_key
from localagent import procs
from localagent.config import AgentConfig
from localagent.health import QUEUE_RUNTIMES

if TYPE_CHECKING:
    from localagent.supervisor import Replica

log = logging.getLogger(__name__)

# A draining replica whose gauges could not be read this many checks in a row is not serving: nothing to wait for.
UNREADABLE_CHECKS = 3
# Acknowledgements silent this long (and at least 4 ack timeouts) are removed: a crashed gateway never removes its own.
PRUNE_ACKS_AFTER_S = 300.0


@dataclass
class Draining:
    """A replica on its way out, and what it still waits for."""

    replica: Replica
    since: float  # monotonic: when it started draining (the drain timeout counts from here)
    unrouted_version: int | None = None  # the first snapshot version seen without its endpoint
    unrouted_at: float = 0.0  # epoch seconds, when that was seen
    terminated_at: float | None = None  # monotonic: SIGTERM sent
    unreadable_checks: int = 0
    waiting_for: str = "a snapshot without its endpoint"

    @property
    def key(self) -> str:
        return self.replica.record.key

    @property
    def check_key(self) -> str:
        """Its key among the health checks (a draining replica may share its slot key with its successor)."""
        return f"drain:{self.replica.record.pid}"


class Drainer:
    """The agent's draining replicas, by pid."""

    def __init__(self, config: AgentConfig, client: redis.Redis) -> None:
        self.config = config
        self.redis = client
        self.items: dict[int, Draining] = {}
        self._checked_version = -1  # the stored version the sections were last read at
        self._routed_version = 0  # the snapshot version the routed endpoints are known to hold from
        self._routed: frozenset[str] = frozenset()
        # section name -> (the version the index listed, the endpoints it routes to): only changed ones are read again
        self._sections: dict[str, tuple[int, frozenset[str]]] = {}

    # ---- membership ------------------------------------------------------------------------------------------
    def add(self, replica: Replica) -> None:
        self.items[replica.record.pid] = Draining(replica, since=time.monotonic())
        log.info("draining replica %s (pid %s, port %s)", replica.record.key, replica.record.pid, replica.record.port)

    def take_back(self, key: str, spec_hash: str) -> Replica | None:
        """A draining replica of slot ``key`` running ``spec_hash``, not yet signalled: back into service."""
        for pid, item in list(self.items.items()):
            replica = item.replica
            if item.terminated_at is None and replica.record.key == key and replica.record.spec_hash == spec_hash:
                del self.items[pid]
                log.info("replica %s is wanted again: back into service", key)
                return replica
        return None

    def replicas(self) -> list[Replica]:
        return [item.replica for item in self.items.values()]

    def health_targets(self) -> dict[str, tuple[str, int, str]]:
        """The draining replicas still to be judged, for the tick's health checks (their gauges are read too)."""
        config = self.config
        return {
            item.check_key: (config.host, item.replica.record.port, config.health_path(item.replica.record.runtime))
            for item in self.items.values()
            if item.terminated_at is None
        }

    def gauged(self) -> set[str]:
        return {item.check_key for item in self.items.values() if item.replica.record.runtime in QUEUE_RUNTIMES}

    # ---- one tick --------------------------------------------------------------------------------------------
    def step(self, healthy: dict[str, bool], in_flight: dict[str, int], refresh: Callable[[Replica], None]) -> None:
        """Judge every draining replica once and SIGTERM those whose wait is over; SIGKILL those past their grace."""
        pending = [item for item in self.items.values() if item.terminated_at is None]
        if pending:
            try:
                acks = self._read(pending)
            except (redis.RedisError, ValueError) as exc:
                # Without the snapshot and the acknowledgements nothing can be judged: keep every replica this tick.
                log.warning("cannot judge draining replicas: %s", exc)
                pending, acks = [], {}
            now_wall, now = time.time(), time.monotonic()
            for item in pending:
                if self._may_stop(item, acks, healthy, in_flight, now_wall, now):
                    self._terminate(item, refresh, now)
        now = time.monotonic()
        for item in self.items.values():
            if item.terminated_at is not None and now - item.terminated_at > self.config.stop_grace_s:
                procs.signal_group(item.replica.record.identity, signal.SIGKILL)

    def _read(self, pending: list[Draining]) -> dict[str, contract.Ack]:
        """The acknowledgements, and the routed endpoints of the newest snapshot when its version moved."""
        prefix = self.config.prefix
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(contract.config_version_key(prefix))
        pipe.hgetall(contract.acks_key(prefix))
        raw_version, raw_acks = pipe.execute()
        version = int(raw_version) if raw_version is not None else 0
        if version != self._checked_version:
            self._read_sections()
        now = time.time()
        for item in pending:
            if item.replica.endpoint in self._routed:
                item.unrouted_version = None  # still (or again) published: the wait starts over
            elif item.unrouted_version is None:
                item.unrouted_version, item.unrouted_at = self._routed_version, now
        acks = contract.parse_acks(raw_acks)
        stale = list(contract.stale_gateways(acks, now, max(PRUNE_ACKS_AFTER_S, 4 * self.config.drain_ack_timeout_s)))
        if stale:
            self.redis.hdel(contract.acks_key(prefix), *stale)
        return acks

    def _read_sections(self) -> None:
        """Refresh the routed endpoints from the sections whose version moved since they were last read."""
        prefix = self.config.prefix
        index_version, index = snapshot.read_index(self.redis, prefix)
        sections = {name: cached for name, cached in self._sections.items() if name in index}
        stale = snapshot.stale_sections(index, {name: version for name, (version, _) in sections.items()})
        # The sections fetched may be newer than the index (a publish came between): fetched with the version in one
        # MULTI, they are known to be no newer than it, and the endpoints they leave out are unrouted from it on.
        pipe = self.redis.pipeline(transaction=True)
        pipe.get(contract.config_version_key(prefix))
        if stale:
            pipe.hmget(config_sections_key(prefix), stale)
        raw_version, *values = pipe.execute()
        fetched = dict(zip(stale, values[0], strict=True)) if stale else {}
        for name in stale:
            raw = fetched.get(name)
            if raw is None:  # removed since the index was read
                sections.pop(name, None)
                continue
            try:
                section: Any = snapshot.decode_section(raw)
                if not isinstance(section, dict):
                    raise TypeError(f"not a JSON object but {type(section).__name__}")
                routed = contract.routed_endpoints(section)
            except (TypeError, ValueError) as exc:
                # The gateways keep the version before it too (or leave a new one out): so do we.
                log.warning("snapshot section %s (version %s) is malformed, kept as it was: %r", name, index[name], exc)
                previous = sections.get(name)
                routed = previous[1] if previous is not None else frozenset()
            sections[name] = (index[name], routed)
        self._sections = sections
        self._checked_version = index_version
        self._routed_version = max(index_version, int(raw_version or 0))
        self._routed = frozenset().union(*(routed for _, routed in sections.values()))

    def _may_stop(
        self,
        item: Draining,
        acks: dict[str, contract.Ack],
        healthy: dict[str, bool],
        in_flight: dict[str, int],
        now_wall: float,
        now: float,
    ) -> bool:
        if now - item.since >= self.config.drain_timeout_s:
            item.waiting_for = "nothing: its drain timeout passed"
            return True
        if item.unrouted_version is None:
            item.waiting_for = "a snapshot without its endpoint"
            return False
        lagging = contract.lagging_gateways(
            acks, item.unrouted_version, item.unrouted_at, now_wall, self.config.drain_ack_timeout_s
        )
        if lagging:
            item.waiting_for = (
                f"{len(lagging)} gateway(s) to load snapshot version {item.unrouted_version}: {', '.join(lagging)}"
            )
            return False
        if item.replica.record.runtime not in QUEUE_RUNTIMES:
            return True  # no gauge to read: its own graceful shutdown finishes what it holds
        count = in_flight.get(item.check_key)
        if count is None:
            item.unreadable_checks += 1
            item.waiting_for = "its in-flight count"
            return not healthy.get(item.check_key, False) and item.unreadable_checks >= UNREADABLE_CHECKS
        item.unreadable_checks = 0
        item.waiting_for = f"{count} request(s) in flight"
        return count == 0

    def _terminate(self, item: Draining, refresh: Callable[[Replica], None], now: float) -> None:
        replica = item.replica
        if replica.proc is not None and replica.proc.poll() is None:
            refresh(replica)
        log.info("stopping drained replica %s (pid %s): waited %.1f s", item.key, replica.record.pid, now - item.since)
        item.terminated_at = now
        procs.signal_group(replica.record.identity, signal.SIGTERM)

    def reap(self) -> list[Replica]:
        """Draining replicas whose process is gone (reaped when they are our children)."""
        gone: list[Replica] = []
        for pid, item in list(self.items.items()):
            replica = item.replica
            exited = replica.proc.poll() is not None if replica.proc is not None else False
            if exited or not procs.is_same_process(replica.record.identity):
                del self.items[pid]
                gone.append(replica)
        return gone

    def stop_all(self) -> None:
        """Stop every draining replica now (the agent is shutting down and takes its replicas with it)."""
        draining = self.replicas()
        children = {r.record.pid: r.proc for r in draining if r.proc is not None}
        procs.stop_processes([r.record.identity for r in draining], self.config.stop_grace_s, children)
        self.items.clear()

    def status(self) -> list[dict[str, Any]]:
        """The draining replicas as the control API's ``/status`` lists them."""
        return [
            {
                **item.replica.record.__dict__,
                "endpoint": item.replica.endpoint,
                "unrouted_version": item.unrouted_version,
                "stopping": item.terminated_at is not None,
                "waiting_for": item.waiting_for,
            }
            for item in sorted(self.items.values(), key=lambda i: i.key)
        ]

    def describe(self, revision_id: int) -> list[str]:
        """Status message parts for a revision's draining replicas."""
        return [
            f"replica {item.key} draining (waiting for {item.waiting_for})"
            if item.terminated_at is None
            else f"replica {item.key} stopping"
            for item in sorted(self.items.values(), key=lambda i: i.key)
            if item.replica.record.revision_id == revision_id
        ]
