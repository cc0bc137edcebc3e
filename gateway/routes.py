"""The gateway's HTTP routes: a dict lookup on the path, then the inference pipeline, /v1/models or a probe.

The Batch API's files and batches routes are matched by their shape after that (``files_proxy.route_methods``)
and forwarded to the control plane.

``/healthz`` is liveness (the process answers); ``/readyz`` is readiness (a config snapshot is loaded). Until one
is, every route that authenticates answers 503 ``snapshot_unavailable`` with ``Retry-After`` before auth: without a
snapshot the gateway knows no key, and a 401 would tell clients that do not retry it that their key is bad.
"""

from __future__ import annotations

import time

import orjson

from gateway.asgi import Receive, Scope, Send, request_id_from, respond
from gateway.auth import INFERENCE_SCOPE, READ_SCOPE
from gateway.context import GatewayContext
from gateway.errors import GatewayError, service_unavailable
from gateway.files_proxy import PREFIXES as BATCH_API_PREFIXES
from gateway.files_proxy import forward, route_methods
from gateway.inference import serve_inference
from gateway.snapshot import SnapshotStore
from gateway.validation import CHAT, COMPLETIONS, EMBEDDINGS

INFERENCE_ROUTES = {
    "/v1/chat/completions": CHAT,
    "/v1/completions": COMPLETIONS,
    "/v1/embeddings": EMBEDDINGS,
}

# How long a client is asked to wait while no snapshot is loaded: the version poll retries every second.
SNAPSHOT_RETRY_AFTER_S = 1.0


async def handle_http(ctx: GatewayContext, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one HTTP request."""
    started = time.perf_counter()
    path: str = scope["path"]
    method: str = scope["method"]
    kind = INFERENCE_ROUTES.get(path)
    if kind is not None:
        error = _method_not_allowed(method, path) if method != "POST" else snapshot_unavailable(ctx.store)
        if error is None:
            await serve_inference(ctx, kind, scope, receive, send, started)
            return
        await ctx.replies.error(send, _request_id(scope), method, path, started, error)
    elif path == "/v1/models" and method == "GET":
        await _serve_models(ctx, scope, send, started)
    elif path == "/healthz" and method == "GET":
        # Liveness only: the process answers. The version is informational (benchmarks and tests wait on it).
        body = orjson.dumps({"status": "ok", "snapshot_version": ctx.store.current.version})
        await respond(send, 200, body, _request_id(scope))
    elif path == "/readyz" and method == "GET":
        ready = ctx.store.loaded
        status = "ready" if ready else "snapshot_unavailable"
        body = orjson.dumps({"status": status, "snapshot_version": ctx.store.current.version})
        await respond(send, 200 if ready else 503, body, _request_id(scope))
    elif path.startswith(BATCH_API_PREFIXES):
        await _serve_batch_api(ctx, scope, receive, send, started)
    else:
        await ctx.replies.error(send, _request_id(scope), method, path, started, _unknown_url(method, path))


def snapshot_unavailable(store: SnapshotStore) -> GatewayError | None:
    """The refusal of every route that authenticates while no snapshot is loaded, else None.

    Checked before auth (an empty snapshot would make every key a 401). The error is protocol-neutral (status,
    code, message, ``Retry-After``); each protocol renders it in its own error shape, as it renders its others.
    """
    if store.loaded:
        return None
    return service_unavailable(
        "The gateway has not loaded its configuration yet; retry shortly.",
        "snapshot_unavailable",
        SNAPSHOT_RETRY_AFTER_S,
    )


def _request_id(scope: Scope) -> str:
    raw = None
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            raw = value  # the last one counts, as in the inference pipeline
    return request_id_from(raw)


async def _serve_models(ctx: GatewayContext, scope: Scope, send: Send, started: float) -> None:
    rid = _request_id(scope)
    if (unready := snapshot_unavailable(ctx.store)) is not None:
        await ctx.replies.error(send, rid, "GET", "/v1/models", started, unready)
        return
    authorization = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value
    snapshot = ctx.store.current
    try:
        principal = ctx.auth.authenticate(authorization, snapshot, (INFERENCE_SCOPE, READ_SCOPE))
    except GatewayError as error:
        await ctx.replies.error(send, rid, "GET", "/v1/models", started, error)
        return
    tenant = principal.tenant.slug
    data = [
        {"id": d.name, "object": "model", "created": d.created, "owned_by": tenant}
        for d in snapshot.by_tenant.get(tenant, ())
    ]
    await respond(send, 200, orjson.dumps({"object": "list", "data": data}), rid)
    ctx.replies.finished(rid, "GET", "/v1/models", tenant, "", 200, started)


async def _serve_batch_api(ctx: GatewayContext, scope: Scope, receive: Receive, send: Send, started: float) -> None:
    """``/v1/files`` and ``/v1/batches``: refused here as any unknown URL or method, else forwarded."""
    path: str = scope["path"]
    method: str = scope["method"]
    methods = route_methods(scope)
    if methods is None:
        error: GatewayError | None = _unknown_url(method, path)
    elif method not in methods:
        error = _method_not_allowed(method, path)
    else:
        error = snapshot_unavailable(ctx.store)
    if error is not None:
        await ctx.replies.error(send, _request_id(scope), method, path, started, error)
        return
    await forward(ctx, scope, receive, send, started)


def _unknown_url(method: str, path: str) -> GatewayError:
    return GatewayError(404, f"Unknown request URL: {method} {path}.", "invalid_request_error", "unknown_url")


def _method_not_allowed(method: str, path: str) -> GatewayError:
    return GatewayError(
        405, f"Method {method} is not allowed on {path}.", "invalid_request_error", "method_not_allowed"
    )
