"""The gateway's HTTP routes: a dict lookup on the path, then the inference pipeline, /v1/models or a probe.

The Open Inference Protocol's routes (everything under ``/v2``) go to ``gateway.v2_routes``. The Batch API's files
and batches routes are matched by their shape after that (``files_proxy.route_methods``) and forwarded to the
control plane.

``/healthz`` is liveness (the process answers); ``/readyz`` is readiness (a config snapshot is loaded). Until one
is, every route that authenticates answers 503 ``snapshot_unavailable`` (``gateway.refusals``).

The routes a browser page may call (``BROWSER_ROUTES`` and everything under ``/v2``) answer CORS preflights first
and add the CORS headers to their answers for an allowed origin (``gateway.cors``).
"""

from __future__ import annotations

import time

import orjson

from controlplane.contracts.protocols import OPENAI, V2
from gateway.asgi import Receive, Scope, Send, respond
from gateway.auth import INFERENCE_SCOPE, READ_SCOPE
from gateway.context import GatewayContext
from gateway.cors import is_preflight, serve_preflight, with_cors
from gateway.errors import GatewayError
from gateway.files_proxy import PREFIXES as BATCH_API_PREFIXES
from gateway.files_proxy import forward, route_methods
from gateway.inference import serve_inference
from gateway.refusals import authorization, method_not_allowed, request_id, snapshot_unavailable, unknown_url
from gateway.v2_paths import PREFIX as V2_PREFIX
from gateway.v2_routes import serve_v2
from gateway.validation import CHAT, COMPLETIONS, EMBEDDINGS, IMAGES

INFERENCE_ROUTES = {
    "/v1/chat/completions": CHAT,
    "/v1/completions": COMPLETIONS,
    "/v1/embeddings": EMBEDDINGS,
    "/v1/images/generations": IMAGES,
}
# The routes a page of an allowed origin may call from a browser, with the methods they answer; /v2 answers both.
BROWSER_ROUTES = {**dict.fromkeys(INFERENCE_ROUTES, b"POST"), "/v1/models": b"GET"}
V2_METHODS = b"GET, POST"


async def handle_http(ctx: GatewayContext, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one HTTP request."""
    started = time.perf_counter()
    path: str = scope["path"]
    method: str = scope["method"]
    v2 = path.startswith(V2_PREFIX) and (len(path) == len(V2_PREFIX) or path[len(V2_PREFIX)] == "/")
    browser_methods = V2_METHODS if v2 else BROWSER_ROUTES.get(path)
    if browser_methods is not None:
        if method == "OPTIONS" and is_preflight(scope):
            await serve_preflight(ctx, scope, send, started, browser_methods, V2 if v2 else OPENAI)
            return
        send = with_cors(ctx.config.cors_origins, scope, send)
    kind = INFERENCE_ROUTES.get(path)
    if kind is not None:
        error = method_not_allowed(method, path) if method != "POST" else snapshot_unavailable(ctx.store)
        if error is None:
            await serve_inference(ctx, kind, scope, receive, send, started)
            return
        await ctx.replies.error(send, request_id(scope), method, path, started, error)
    elif path == "/v1/models" and method == "GET":
        await _serve_models(ctx, scope, send, started)
    elif path == "/healthz" and method == "GET":
        # Liveness only: the process answers. The version is informational (benchmarks and tests wait on it).
        body = orjson.dumps({"status": "ok", "snapshot_version": ctx.store.current.version})
        await respond(send, 200, body, request_id(scope))
    elif path == "/readyz" and method == "GET":
        ready = ctx.store.loaded
        status = "ready" if ready else "snapshot_unavailable"
        body = orjson.dumps({"status": status, "snapshot_version": ctx.store.current.version})
        await respond(send, 200 if ready else 503, body, request_id(scope))
    elif v2:
        await serve_v2(ctx, scope, receive, send, started)
    elif path.startswith(BATCH_API_PREFIXES):
        await _serve_batch_api(ctx, scope, receive, send, started)
    else:
        await ctx.replies.error(send, request_id(scope), method, path, started, unknown_url(method, path))


async def _serve_models(ctx: GatewayContext, scope: Scope, send: Send, started: float) -> None:
    rid = request_id(scope)
    if (unready := snapshot_unavailable(ctx.store)) is not None:
        await ctx.replies.error(send, rid, "GET", "/v1/models", started, unready)
        return
    snapshot = ctx.store.current
    try:
        principal = ctx.auth.authenticate(authorization(scope), snapshot, (INFERENCE_SCOPE, READ_SCOPE))
    except GatewayError as error:
        await ctx.replies.error(send, rid, "GET", "/v1/models", started, error)
        return
    tenant = principal.tenant.slug
    # The OpenAI protocol's models only: a v2 model cannot answer any route a client of this list would call.
    data = [
        {"id": d.name, "object": "model", "created": d.created, "owned_by": tenant}
        for d in snapshot.by_tenant.get(tenant, ())
        if d.protocol == OPENAI
    ]
    await respond(send, 200, orjson.dumps({"object": "list", "data": data}), rid)
    ctx.replies.finished(rid, "GET", "/v1/models", tenant, "", 200, started)


async def _serve_batch_api(ctx: GatewayContext, scope: Scope, receive: Receive, send: Send, started: float) -> None:
    """``/v1/files`` and ``/v1/batches``: refused here as any unknown URL or method, else forwarded."""
    path: str = scope["path"]
    method: str = scope["method"]
    methods = route_methods(scope)
    if methods is None:
        error: GatewayError | None = unknown_url(method, path)
    elif method not in methods:
        error = method_not_allowed(method, path)
    else:
        error = snapshot_unavailable(ctx.store)
    if error is not None:
        await ctx.replies.error(send, request_id(scope), method, path, started, error)
        return
    await forward(ctx, scope, receive, send, started)
