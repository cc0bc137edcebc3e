"""Everything the gateway's handlers share, built whole once per process before the first request.

``build_context(config)`` opens Redis, the upstream transports and the control plane's pool, loads the snapshot
(or starts without one: the version poll keeps trying), opens the metrics listener and starts the background tasks
(pub/sub listener, 1 s version poll, 1 s load-figure flush, snapshot acknowledgements); ``GatewayContext.aclose()``
undoes it all, in reverse. The handlers (``gateway.routes``, ``gateway.inference``, ``gateway.files_proxy`` and the
relays) take the context as their one dependency; nothing in it is filled in later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import aiohttp
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from controlplane.contracts.redis_names import CONFIG_NOTIFY, WAKE, channel
from gateway.accesslog import AccessLog
from gateway.acks import SnapshotAcks
from gateway.auth import Authenticator
from gateway.batching import EmbeddingsBatcher
from gateway.config import GatewayConfig
from gateway.embeddings_upstream import EmbeddingsUpstream, UpstreamRejected
from gateway.external import AsyncResolver, ExternalUpstream, local_services, system_resolve
from gateway.limits import Limiter
from gateway.load import LoadFigures
from gateway.metrics import GatewayMetrics, MetricsListener
from gateway.redispipe import RedisPipe, supports
from gateway.replies import Replies
from gateway.routing import Balancer
from gateway.snapshot import SnapshotStore
from gateway.transport import Transports
from gateway.upstream import UpstreamPool
from gateway.upstream_library import LibraryTransport
from gateway.usage import UsageSink
from gateway.wake import ColdStarts

log = logging.getLogger("frontdoor.gateway")


@dataclass(frozen=True, slots=True)
class GatewayContext:
    """Process-wide state shared by every request; made by ``build_context``, closed by ``aclose``."""

    config: GatewayConfig
    redis: aioredis.Redis  # snapshot, pub/sub, load figures, acknowledgements, wake signals
    store: SnapshotStore
    auth: Authenticator
    limiter: Limiter
    usage: UsageSink
    load: LoadFigures
    balancer: Balancer
    transports: Transports  # published replicas: the transport of each endpoint
    external: ExternalUpstream  # tenant-given endpoints: the address policy, then a pinned transport
    batcher: EmbeddingsBatcher
    cold: ColdStarts
    metrics: GatewayMetrics
    access_log: AccessLog
    replies: Replies  # errors and answers of requests that never reached the limiter
    controlplane: aiohttp.ClientSession  # /v1/files and /v1/batches, forwarded (``gateway.files_proxy``)
    _closing: contextlib.AsyncExitStack

    async def aclose(self) -> None:
        """Stop the background tasks, withdraw the acknowledgement, flush, and close every connection."""
        await self._closing.aclose()


async def build_context(config: GatewayConfig, resolver: AsyncResolver = system_resolve) -> GatewayContext:
    """Open and start everything the handlers need; whatever was opened is closed again when a step fails.

    ``resolver``: how the host names of tenant-given endpoints are looked up (tests pass one).
    """
    closing = contextlib.AsyncExitStack()
    try:
        return await _open(config, resolver, closing)
    except BaseException:
        await closing.aclose()
        raise


async def _open(config: GatewayConfig, resolver: AsyncResolver, closing: contextlib.AsyncExitStack) -> GatewayContext:
    # Callbacks run in reverse: the tasks stop first, the Redis clients close last.
    redis = aioredis.Redis.from_url(
        config.redis_url,
        socket_timeout=config.redis_timeout_s,
        socket_connect_timeout=config.redis_timeout_s,
        retry=Retry(NoBackoff(), 0),  # no hidden retries: a dead Redis answers 503 at once
        max_connections=512,
    )
    closing.push_async_callback(redis.aclose)  # type: ignore[attr-defined]  # redis-py's stubs predate aclose
    # The hot path's Redis (limiter, usage): auto-pipelined where the URL allows it; the redis-py client elsewhere.
    hot_redis: aioredis.Redis | RedisPipe = redis
    if supports(config.redis_url):
        hot_redis = RedisPipe(config.redis_url, config.redis_timeout_s)
        closing.push_async_callback(hot_redis.aclose)
    transports = Transports(
        UpstreamPool(max_idle_per_host=config.upstream_pool_size),
        LibraryTransport(config.upstream_pool_size, config.upstream_ca_bundle, resolve_names=True),
        LibraryTransport(config.upstream_pool_size, config.upstream_ca_bundle),
        library_only=config.upstream_client == "library",
    )
    closing.push_async_callback(transports.aclose)
    controlplane = _controlplane_session(config)
    closing.push_async_callback(controlplane.close)
    metrics = GatewayMetrics()
    access_log = AccessLog(config.access_log)
    closing.callback(access_log.flush)
    auth = Authenticator(config.key_pepper, config.auth_cache_size)
    balancer = Balancer(config.eject_s)
    load = LoadFigures(config.redis_prefix)
    closing.push_async_callback(_flush_load, load, redis)
    external = ExternalUpstream(transports, resolver)
    store = SnapshotStore(
        redis,
        config.redis_prefix,
        channel(config.redis_prefix, config.redis_url, CONFIG_NOTIFY),
        await local_services(config, resolver),
        config.sealer,
    )
    external.use(store.current)
    store.on_change.append(auth.clear)
    store.on_change.append(external.use)
    # Backends stop a replica only once every gateway has loaded a snapshot without it (contracts/drain.py).
    acks = SnapshotAcks(redis, config.redis_prefix, store)
    store.on_change.append(acks.on_swap)
    closing.push_async_callback(acks.withdraw)
    limiter = Limiter(hot_redis, config.redis_prefix)
    embeddings = EmbeddingsUpstream(config, balancer, transports, external)
    batcher = EmbeddingsBatcher(
        embeddings.send,
        window_s=config.embeddings_window_s,
        max_batch=config.embeddings_max_batch,
        retry_alone=(UpstreamRejected,),
    )
    # Prometheus text on a listener of its own (none when the port is 0): it names every tenant and deployment.
    if config.metrics_port:
        listener = MetricsListener(metrics.render, config.metrics_token)
        await listener.start(config.metrics_host, config.metrics_port, config.workers)
        closing.push_async_callback(listener.close)
    try:
        await limiter.load_scripts()
        await store.reload()
    except Exception as exc:  # start anyway: the poll keeps trying; until it loads one, /readyz and requests 503
        log.warning("no config snapshot at start: %s", exc)
    if not store.loaded:
        log.warning("no config snapshot yet: not ready, requests get 503 snapshot_unavailable until one loads")
    tasks = [
        asyncio.create_task(store.listen_forever(), name="snapshot-listener"),
        asyncio.create_task(store.poll_version_forever(), name="snapshot-poll"),
        asyncio.create_task(_flush_forever(access_log, load, redis), name="load-flush"),
        asyncio.create_task(acks.ack_forever(), name="snapshot-acks"),
    ]
    closing.push_async_callback(_stop, tasks)
    return GatewayContext(
        config=config,
        redis=redis,
        store=store,
        auth=auth,
        limiter=limiter,
        usage=UsageSink(hot_redis, config.redis_prefix, limiter),
        load=load,
        balancer=balancer,
        transports=transports,
        external=external,
        batcher=batcher,
        cold=ColdStarts(redis, config.redis_prefix, channel(config.redis_prefix, config.redis_url, WAKE)),
        metrics=metrics,
        access_log=access_log,
        replies=Replies(metrics, access_log),
        controlplane=controlplane,
        _closing=closing.pop_all(),  # from here on the context owns what was opened
    )


def _controlplane_session(config: GatewayConfig) -> aiohttp.ClientSession:
    """The pool of the files and batches routes to the control plane: its own, apart from the tenants' upstreams.

    The control plane's URL is the operator's, so the address policy of tenant-given endpoints does not apply.
    Bodies are relayed as bytes: nothing asks for compression, nothing is decompressed. The limit bounds the
    uploads and downloads in flight per process; the timeouts are the proxy's, per request.
    """
    connector = aiohttp.TCPConnector(limit=config.upstream_pool_size, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        auto_decompress=False,
    )


async def _flush_forever(access_log: AccessLog, load: LoadFigures, redis: aioredis.Redis) -> None:
    while True:
        await asyncio.sleep(1.0)
        access_log.flush()
        await load.flush(redis)


async def _flush_load(load: LoadFigures, redis: aioredis.Redis) -> None:
    with contextlib.suppress(Exception):
        await load.flush(redis)


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
