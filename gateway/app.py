"""The gateway as a plain ASGI app: ``create_app()`` wires config, Redis, the upstream pool and the handlers.

No web framework: a dict lookup on (method, path) routes the request. The lifespan opens redis.asyncio and
the upstream connection pools (gateway/upstream.py for chat and completions, one aiohttp session for embeddings
batches, gateway/upstream_library.py for https endpoints), loads the snapshot, opens the metrics listener (its
own port, ``gateway.metrics``) and starts the background tasks (pub/sub listener, 1 s version poll, 1 s
load-figure flush). Inference requests run in ``gateway.inference``; tenant-given endpoints go through
``gateway.external`` (the address policy at connect).

``/healthz`` is liveness (the process answers); ``/readyz`` is readiness (a config snapshot is loaded). Until one
is, every route that authenticates answers 503 ``snapshot_unavailable`` with ``Retry-After`` before auth: without a
snapshot the gateway knows no key, and a 401 would tell clients that do not retry it that their key is bad.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiohttp
import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from controlplane.contracts.redis_names import CONFIG_NOTIFY, WAKE, channel
from gateway.accesslog import AccessLog
from gateway.acks import SnapshotAcks
from gateway.asgi import Receive, Scope, Send, request_id_from, respond
from gateway.auth import INFERENCE_SCOPE, READ_SCOPE, Authenticator
from gateway.batching import EmbeddingsBatcher
from gateway.config import GatewayConfig
from gateway.embeddings import UpstreamRejected, send_embeddings_batch
from gateway.errors import GatewayError, service_unavailable
from gateway.external import ExternalUpstream, local_services
from gateway.inference import serve_inference
from gateway.limits import Limiter
from gateway.load import LoadFigures
from gateway.metrics import GatewayMetrics, MetricsListener
from gateway.redispipe import RedisPipe, supports
from gateway.routing import Balancer
from gateway.snapshot import SnapshotStore
from gateway.upstream import UpstreamPool
from gateway.upstream_library import LibraryTransport
from gateway.usage import UsageSink
from gateway.validation import CHAT, COMPLETIONS, EMBEDDINGS

log = logging.getLogger("frontdoor.gateway")

INFERENCE_ROUTES = {
    "/v1/chat/completions": CHAT,
    "/v1/completions": COMPLETIONS,
    "/v1/embeddings": EMBEDDINGS,
}

# How long a client is asked to wait while no snapshot is loaded: the version poll retries every second.
SNAPSHOT_RETRY_AFTER_S = 1.0


class Gateway:
    """Process-wide state shared by every request; created once per worker by ``create_app``."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.metrics = GatewayMetrics()
        self.access_log = AccessLog(config.access_log)
        self.auth = Authenticator(config.key_pepper, config.auth_cache_size)
        self.balancer = Balancer(config.eject_s)
        self.load = LoadFigures(config.redis_prefix)
        # Prometheus text on a listener of its own (none when the port is 0): it names every tenant and deployment.
        self.metrics_listener = (
            MetricsListener(self.metrics.render, config.metrics_token) if config.metrics_port else None
        )
        self.wake_channel = channel(config.redis_prefix, config.redis_url, WAKE)
        # Set in startup(); typed as present because no request is served before it ran.
        self.redis: aioredis.Redis = None  # type: ignore[assignment]
        # The hot path's Redis (limiter, usage): auto-pipelined; the redis-py client does the rest.
        self.hot_redis: aioredis.Redis | RedisPipe = None  # type: ignore[assignment]
        self.session: aiohttp.ClientSession = None  # type: ignore[assignment]
        # Chat and completions; embeddings batches go through ``session``.
        self.upstream = UpstreamPool(max_idle_per_host=config.upstream_pool_size)
        # Tenant-given endpoints: the address policy, then http through ``upstream`` or https through the library.
        # Tests replace ``external.resolver`` so that no name is looked up for real.
        self.external = ExternalUpstream(
            self.upstream, LibraryTransport(config.upstream_pool_size, config.upstream_ca_bundle)
        )
        self.store: SnapshotStore = None  # type: ignore[assignment]
        self.limiter: Limiter = None  # type: ignore[assignment]
        self.usage: UsageSink = None  # type: ignore[assignment]
        self.batcher: EmbeddingsBatcher = None  # type: ignore[assignment]
        self.acks: SnapshotAcks = None  # type: ignore[assignment]
        self.cold_held = 0
        self.wake_sent: dict[int, float] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def startup(self) -> None:
        cfg = self.config
        self.redis = aioredis.Redis.from_url(
            cfg.redis_url,
            socket_timeout=cfg.redis_timeout_s,
            socket_connect_timeout=cfg.redis_timeout_s,
            retry=Retry(NoBackoff(), 0),  # no hidden retries: a dead Redis answers 503 at once
            max_connections=512,
        )
        connector = aiohttp.TCPConnector(limit=cfg.upstream_pool_size, limit_per_host=0, ttl_dns_cache=300)
        self.session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
        )
        self.store = SnapshotStore(
            self.redis,
            cfg.redis_prefix,
            channel(cfg.redis_prefix, cfg.redis_url, CONFIG_NOTIFY),
            await local_services(cfg, self.external.resolver),
        )
        self.external.use(self.store.current)
        self.store.on_change.append(self.auth.clear)
        self.store.on_change.append(self.external.use)
        # Backends stop a replica only once every gateway has loaded a snapshot without it (contracts/drain.py).
        self.acks = SnapshotAcks(self.redis, cfg.redis_prefix, self.store)
        self.store.on_change.append(self.acks.on_swap)
        self.hot_redis = RedisPipe(cfg.redis_url, cfg.redis_timeout_s) if supports(cfg.redis_url) else self.redis
        self.limiter = Limiter(self.hot_redis, cfg.redis_prefix)
        self.usage = UsageSink(self.hot_redis, cfg.redis_prefix, self.limiter)
        self.batcher = EmbeddingsBatcher(
            lambda key, body: send_embeddings_batch(self, key, body),
            window_s=cfg.embeddings_window_s,
            max_batch=cfg.embeddings_max_batch,
            retry_alone=(UpstreamRejected,),
        )
        if self.metrics_listener is not None:
            await self.metrics_listener.start(cfg.metrics_host, cfg.metrics_port, cfg.workers)
        try:
            await self.limiter.load_scripts()
            await self.store.reload()
        except Exception as exc:  # start anyway: the poll keeps trying; until it loads one, /readyz and requests 503
            log.warning("no config snapshot at start: %s", exc)
        if not self.store.loaded:
            log.warning("no config snapshot yet: not ready, requests get 503 snapshot_unavailable until one loads")
        self._tasks = [
            asyncio.create_task(self.store.listen_forever(), name="snapshot-listener"),
            asyncio.create_task(self.store.poll_version_forever(), name="snapshot-poll"),
            asyncio.create_task(self._flush_forever(), name="load-flush"),
            asyncio.create_task(self.acks.ack_forever(), name="snapshot-acks"),
        ]

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.access_log.flush()
            await self.load.flush(self.redis)

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.metrics_listener is not None:
            await self.metrics_listener.close()
        with contextlib.suppress(Exception):
            await self.load.flush(self.redis)
        await self.acks.withdraw()
        self.access_log.flush()
        await self.session.close()
        await self.external.library.aclose()
        self.upstream.close()
        if isinstance(self.hot_redis, RedisPipe):
            await self.hot_redis.aclose()
        await self.redis.aclose()  # type: ignore[attr-defined]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.handle_http(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def handle_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path: str = scope["path"]
        method: str = scope["method"]
        authorization = rid_header = content_length = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"x-request-id":
                rid_header = value
            elif name == b"content-length":
                content_length = value
        rid = request_id_from(rid_header)
        kind = INFERENCE_ROUTES.get(path)
        if kind is not None:
            if method != "POST":
                await self._plain_error(send, rid, method, path, started, _method_not_allowed(method, path))
                return
            if (unready := self.snapshot_unavailable()) is not None:
                await self._plain_error(send, rid, method, path, started, unready)
                return
            client_rid = rid_header is not None and rid.encode() == rid_header
            await serve_inference(
                self, kind, scope, receive, send, rid, client_rid, authorization, content_length, started
            )
        elif path == "/v1/models" and method == "GET":
            if (unready := self.snapshot_unavailable()) is not None:
                await self._plain_error(send, rid, method, path, started, unready)
                return
            await self._serve_models(send, rid, authorization, started)
        elif path == "/healthz" and method == "GET":
            # Liveness only: the process answers. The version is informational (benchmarks and tests wait on it).
            body = orjson.dumps({"status": "ok", "snapshot_version": self.store.current.version})
            await respond(send, 200, body, rid)
        elif path == "/readyz" and method == "GET":
            ready = self.store.loaded
            status = "ready" if ready else "snapshot_unavailable"
            body = orjson.dumps({"status": status, "snapshot_version": self.store.current.version})
            await respond(send, 200 if ready else 503, body, rid)
        else:
            error = GatewayError(404, f"Unknown request URL: {method} {path}.", "invalid_request_error", "unknown_url")
            await self._plain_error(send, rid, method, path, started, error)

    def snapshot_unavailable(self) -> GatewayError | None:
        """The refusal of every route that authenticates while no snapshot is loaded, else None.

        Checked before auth (an empty snapshot would make every key a 401). The error is protocol-neutral (status,
        code, message, ``Retry-After``); each protocol renders it in its own error shape, as it renders its others.
        """
        if self.store.loaded:
            return None
        return service_unavailable(
            "The gateway has not loaded its configuration yet; retry shortly.",
            "snapshot_unavailable",
            SNAPSHOT_RETRY_AFTER_S,
        )

    async def _serve_models(self, send: Send, rid: str, authorization: bytes | None, started: float) -> None:
        snapshot = self.store.current
        try:
            principal = self.auth.authenticate(authorization, snapshot, (INFERENCE_SCOPE, READ_SCOPE))
        except GatewayError as error:
            await self._plain_error(send, rid, "GET", "/v1/models", started, error)
            return
        tenant = principal.tenant.slug
        data = [
            {"id": d.name, "object": "model", "created": d.created, "owned_by": tenant}
            for d in snapshot.by_tenant.get(tenant, ())
        ]
        await respond(send, 200, orjson.dumps({"object": "list", "data": data}), rid)
        self.finish_plain(rid, "GET", "/v1/models", tenant, "", 200, started)

    async def _plain_error(
        self,
        send: Send,
        rid: str,
        method: str,
        path: str,
        started: float,
        error: GatewayError,
        tenant: str = "",
        deployment: str = "",
        extra: dict[str, str] | None = None,
    ) -> None:
        headers = {**error.headers, **extra} if extra else error.headers
        await respond(send, error.status, error.body(), rid, headers)
        self.finish_plain(rid, method, path, tenant, deployment, error.status, started)

    def finish_plain(
        self, rid: str, method: str, path: str, tenant: str, deployment: str, status: int, started: float
    ) -> None:
        """Metrics and access log for a request that never reached the limiter (nothing to meter)."""
        elapsed = time.perf_counter() - started
        self.metrics.observe_request(tenant, deployment, status, elapsed)
        self.access_log.write(rid, method, path, tenant, deployment, status, elapsed * 1000)


def _method_not_allowed(method: str, path: str) -> GatewayError:
    return GatewayError(
        405, f"Method {method} is not allowed on {path}.", "invalid_request_error", "method_not_allowed"
    )


def create_app(config: GatewayConfig | None = None) -> Gateway:
    """The ASGI application (uvicorn: ``gateway.app:create_app`` with ``factory=True``)."""
    return Gateway(config or GatewayConfig.from_env())
