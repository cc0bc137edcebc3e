"""The Open Inference Protocol's (v2) REST routes, authenticated with the tenant's inference key.

Infer and model metadata reach a replica, so they take the inference pipeline (limits, routing, canaries, holding
while a deployment starts from zero, metering). What the gateway knows itself is answered here from the snapshot,
admitted by nothing and metered as nothing: the server's metadata, liveness and readiness, and a model's readiness
(ready: running with at least one ready replica; asking wakes a deployment scaled to zero, as a request would).

Every v2 route authenticates, the health routes too: they are the tenant's view of the service (a load balancer
probes ``/healthz``). Errors are the protocol's ``{"error": "<message>"}`` with the statuses of the OpenAI routes.
"""

from __future__ import annotations

import orjson

from controlplane.contracts.protocols import V2
from gateway.asgi import Receive, Scope, Send, respond
from gateway.auth import INFERENCE_SCOPE, READ_SCOPE
from gateway.context import GatewayContext
from gateway.errors import GatewayError, model_not_found, service_unavailable
from gateway.inference import serve_inference
from gateway.protocol_refusal import protocol_refusal
from gateway.refusals import authorization, method_not_allowed, request_id, snapshot_unavailable, unknown_url
from gateway.v2_paths import MODEL_INFER, MODEL_METADATA, MODEL_READY, SERVER_METADATA, SERVER_READY, match
from gateway.validation import V2_INFER, V2_METADATA

SERVER_NAME = "frontdoor"
SERVER_VERSION = "0.1.0"
# The binary tensor data extension passes through to the model servers; the others are not served.
EXTENSIONS = ("binary_tensor_data",)
# The scopes of the routes answered here: reading a model's metadata or readiness is no inference.
READ_SCOPES = (INFERENCE_SCOPE, READ_SCOPE)


async def serve_v2(ctx: GatewayContext, scope: Scope, receive: Receive, send: Send, started: float) -> None:
    """Answer one request under ``/v2``."""
    path: str = scope["path"]
    method: str = scope["method"]
    route = match(path)
    if route is None:
        error: GatewayError | None = unknown_url(method, path)
    elif method != route.method:
        error = method_not_allowed(method, path)
    else:
        error = snapshot_unavailable(ctx.store)
    if error is not None:
        await ctx.replies.error(send, request_id(scope), method, path, started, error, protocol=V2)
        return
    assert route is not None
    if route.route in (MODEL_INFER, MODEL_METADATA):
        kind = V2_INFER if route.route == MODEL_INFER else V2_METADATA
        await serve_inference(ctx, kind, scope, receive, send, started, route)
        return
    rid = request_id(scope)
    snapshot = ctx.store.current
    tenant = deployment_name = ""
    try:
        principal = ctx.auth.authenticate(authorization(scope), snapshot, READ_SCOPES)
        tenant = principal.tenant.slug
        body: dict[str, object]
        if route.route == SERVER_METADATA:
            body = {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": list(EXTENSIONS)}
        elif route.route == MODEL_READY:
            deployment = snapshot.deployments.get((tenant, route.model))
            if deployment is None:
                raise model_not_found(route.model)
            deployment_name = deployment.name
            if (refusal := protocol_refusal(deployment, V2_METADATA, V2)) is not None:
                raise refusal
            if deployment.state != "running":
                raise service_unavailable(f"The model '{deployment.name}' is stopped.", "deployment_stopped")
            if deployment.cold:
                await ctx.cold.signal(deployment.id)
                raise service_unavailable(f"The model '{deployment.name}' is starting.", "deployment_starting", 5.0)
            body = {"name": deployment.name, "ready": True}
        else:  # live, and ready: the gateway answers and has its configuration (checked above)
            body = {"ready": True} if route.route == SERVER_READY else {"live": True}
    except GatewayError as refused:
        await ctx.replies.error(send, rid, method, path, started, refused, tenant, deployment_name, protocol=V2)
        return
    await respond(send, 200, orjson.dumps(body), rid)
    ctx.replies.finished(rid, method, path, tenant, deployment_name, 200, started)
