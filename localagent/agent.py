"""Running the agent: wait for Redis, adopt what a previous agent left, then tick until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

import redis

from controlplane.contracts import localagent as protocol
from localagent import launch, procs, sandbox
from localagent.config import AgentConfig
from localagent.httpapi import start_control_api
from localagent.state import load_ports, load_records, save_records
from localagent.supervisor import Supervisor

log = logging.getLogger(__name__)


def _listen_for_notices(config: AgentConfig, wake: threading.Event, stop: threading.Event) -> None:
    """Wake the loop on every desired-state notice; reconnects on errors (the tick re-reads anyway)."""
    while not stop.is_set():
        try:
            client = redis.Redis.from_url(config.redis_url, socket_timeout=5)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(protocol.notify_channel(config.prefix, config.redis_url))
            while not stop.is_set():
                if pubsub.get_message(timeout=1.0) is not None:
                    wake.set()
        except redis.RedisError as exc:
            log.debug("notice listener reconnecting: %s", exc)
            stop.wait(1.0)


def _wait_for_redis(client: redis.Redis, stop: threading.Event) -> bool:
    delay = 0.5
    while not stop.is_set():
        try:
            client.ping()
            return True
        except redis.RedisError as exc:
            log.warning("waiting for Redis: %s", exc)
            stop.wait(delay)
            delay = min(delay * 2, 5.0)
    return False


def run(config: AgentConfig) -> int:
    stop, wake = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received signal %s, shutting down", signum)
        stop.set()
        wake.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    client = redis.Redis.from_url(config.redis_url, socket_timeout=5, socket_connect_timeout=5)
    supervisor = Supervisor(config, client)
    supervisor.builtin.get()  # start staging the built-in runtime now, while Redis and adoption are dealt with
    log.info("replicas run as user %s (uid %s)", supervisor.run_as.name, supervisor.run_as.uid)
    server = None
    if config.http_port:
        server = start_control_api(config.http_host, config.http_port, lambda: supervisor.snapshot, wake)
        log.info("control API on http://%s:%s", config.http_host, server.server_address[1])
    if not _wait_for_redis(client, stop):
        return 0
    # Nothing is adopted or stopped before the desired state is known, so a Redis outage never kills replicas.
    while not stop.is_set():
        try:
            supervisor.load_desired()
            break
        except redis.RedisError as exc:
            log.warning("cannot read desired state yet: %s", exc)
            stop.wait(1.0)
    supervisor.adopt_or_clean()
    threading.Thread(target=_listen_for_notices, args=(config, wake, stop), name="notices", daemon=True).start()
    log.info("local agent running (state dir %s, prefix %s)", config.state_dir, config.prefix)
    while not stop.is_set():
        started = time.monotonic()
        try:
            supervisor.tick()
        except redis.RedisError as exc:
            log.warning("tick incomplete, Redis error: %s", exc)
        except Exception:
            log.exception("tick failed")  # keep supervising: one bad tick must not orphan every replica
        wake.wait(max(0.05, config.tick_s - (time.monotonic() - started)))
        wake.clear()
    supervisor.shutdown(stop_children=config.stop_children_on_exit)
    if server is not None:
        server.shutdown()
    return 0


def stop_all(config: AgentConfig) -> int:
    """Stop every replica recorded in the state dir or carrying its marker (for scripts after a crash)."""
    idents = {r.identity for r in load_records(config.state_dir) if procs.is_same_process(r.identity)}
    idents |= {ident for ident, _ in procs.find_marked_processes(launch.marker_prefix(config))}
    procs.stop_processes(sorted(idents, key=lambda i: i.pid), config.stop_grace_s)
    save_records(config.state_dir, [], load_ports(config.state_dir))
    run_as = sandbox.resolve_run_as(config.run_as)
    root = sandbox.sandbox_root(config.state_dir, config.stage_dir, run_as)
    sandbox.ReplicaDirs(root, config.state_dir, run_as).remove_all()
    log.info("stopped %d replica process(es)", len(idents))
    return 0
