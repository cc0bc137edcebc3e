"""The inference request pipeline: auth -> body -> validation -> model -> limits -> route -> relay -> meter.

Everything before the limiter is answered from memory. From the moment the limiter admits a request, exactly
one usage event is written for it (with the limiter settle, in one round trip), whatever happens next:
success, upstream error, timeout or client disconnect.

A batch line (``controlplane.contracts.batch_wire``) takes the same pipeline. The control plane's worker sends it
with the internal token instead of a key, naming the key that created the batch; that key's snapshot entry is the
caller. The line is answered at most once: its answer is kept under ``batch_line_key`` and a re-run of the line
gets it back, neither admitted nor metered again. A request without the internal token header pays one header
comparison for all this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

from redis.exceptions import RedisError

from controlplane.contracts.protocols import INFERENCE_HEADER_CONTENT_LENGTH, OPENAI, V2
from gateway.asgi import Receive, Scope, Send, request_id_from, respond
from gateway.auth import INFERENCE_SCOPE, Principal, principal_for
from gateway.batch_lines import INTERNAL_TOKEN, BatchLine, claim_line, keep_answer, parse_line, redis_failed
from gateway.coldhold import enter_hold, serve_holding_refusals, until_warm
from gateway.context import GatewayContext
from gateway.embeddings import serve_embeddings
from gateway.errors import (
    GatewayError,
    UpstreamFailure,
    body_too_large,
    gateway_timeout,
    invalid_request,
    model_not_found,
    service_unavailable,
    stream_error_event,
    upstream_unavailable,
)
from gateway.generation import serve_generation
from gateway.images import serve_images
from gateway.limits import Admission, LimitRequest
from gateway.outcome import DISCONNECTED, LEASE_MARGIN_S, Admitted, ClientGone, Outcome
from gateway.protocol_refusal import protocol_refusal
from gateway.snapshot_index import DeploymentEntry
from gateway.usage import UsageRecord
from gateway.v2_body import parse_infer, parse_metadata
from gateway.v2_paths import V2Route
from gateway.v2_relay import serve_v2_model
from gateway.validation import CHAT, COMPLETIONS, EMBEDDINGS, IMAGES, V2_INFER, V2_METADATA, parse_request

log = logging.getLogger("frontdoor.gateway.inference")

INFERENCE_HEADER = INFERENCE_HEADER_CONTENT_LENGTH.encode()
# The routes a batch line may take (the Batch API's endpoints); on the others the internal token is no credential.
BATCH_KINDS = frozenset({CHAT, COMPLETIONS, EMBEDDINGS})


async def read_body(receive: Receive, content_length: bytes | None, limit: int) -> bytes:
    """The request body, refusing with 413 as soon as it is known to exceed ``limit`` (without reading it all)."""
    # A malformed Content-Length is not trusted either way: the size check below counts the bytes themselves.
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise body_too_large(limit)
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise body_too_large(limit)
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def serve_inference(
    ctx: GatewayContext,
    kind: str,
    scope: Scope,
    receive: Receive,
    send: Send,
    started: float,
    v2: V2Route | None = None,
) -> None:
    """Serve one request to an inference route (``kind``: chat, completions, embeddings, images, or with ``v2``, the
    Open Inference Protocol's route, a model's infer or metadata)."""
    path: str = scope["path"]
    method: str = scope["method"]
    protocol = OPENAI if v2 is None else V2
    authorization = rid_header = content_length = internal_token = inference_header = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value
        elif name == b"x-request-id":
            rid_header = value
        elif name == b"content-length":
            content_length = value
        elif name == INTERNAL_TOKEN:
            internal_token = value
        elif name == INFERENCE_HEADER:
            inference_header = value
    rid = request_id_from(rid_header)
    snapshot = ctx.store.current
    tenant_slug = deployment_name = ""
    line: BatchLine | None = None
    try:
        if internal_token is None or kind not in BATCH_KINDS:
            principal = ctx.auth.authenticate(authorization, snapshot, (INFERENCE_SCOPE,))
        else:  # the token decides: a client's Authorization beside it counts for nothing
            line = parse_line(scope, internal_token, rid_header, ctx.config.internal_token)
            principal = principal_for(line.key_id, snapshot, (INFERENCE_SCOPE,))
        tenant_slug = principal.tenant.slug
        body = await read_body(receive, content_length, ctx.config.max_body_bytes)
        if v2 is None:
            parsed = parse_request(kind, body, ctx.config)
        else:
            parsed = parse_infer(body, inference_header, v2) if kind == V2_INFER else parse_metadata(v2)
        if line is not None and parsed.stream:
            raise invalid_request("Batch lines are answered whole: 'stream' must be false.", "stream", "invalid_value")
        deployment = snapshot.deployments.get((tenant_slug, parsed.model))
        if deployment is None:
            raise model_not_found(parsed.model)
        deployment_name = deployment.name
        if (refusal := protocol_refusal(deployment, kind, protocol)) is not None:
            raise refusal
        if deployment.state != "running":
            raise service_unavailable(f"The deployment '{deployment.name}' is stopped.", "deployment_stopped")
    except GatewayError as error:
        named = (tenant_slug, deployment_name)
        await ctx.replies.error(send, rid, method, path, started, error, *named, protocol=protocol)
        return
    except ClientGone:
        ctx.replies.finished(rid, method, path, tenant_slug, deployment_name, 499, started)
        return

    if line is None:
        # Lease ids and usage dedup use our own id: a client reusing its x-request-id must not merge requests.
        client_rid = rid_header is not None and rid.encode() == rid_header
        usage_id = f"{rid}.{os.urandom(6).hex()}" if client_rid else rid
    else:
        usage_id = rid  # the line's own id: the rollup dedups on it, so a re-run is never metered twice
    timeout_s = deployment.timeout_s or ctx.config.total_timeout_s
    limit_request: LimitRequest | None = LimitRequest(
        request_id=usage_id,
        key_id=principal.key.key_id,
        key_limits=principal.key.limits if line is None else principal.key.limits.for_batch(),
        tenant=tenant_slug,
        tenant_limits=principal.tenant.limits if line is None else principal.tenant.limits.for_batch(),
        deployment_id=deployment.id,
        deployment_max_concurrent=deployment.max_concurrent,
        estimated_tokens=parsed.prompt_estimate + parsed.max_tokens,
        lease_ttl_s=timeout_s + deployment.hold_s(ctx.config.cold_hold_s) + LEASE_MARGIN_S,
        batch=line is not None,
        batch_capacity=deployment.batch_capacity() if line is not None else None,
    )
    assert limit_request is not None
    if line is not None:
        # Held for as long as the try may take; what it answers replaces the hold (``keep_answer``).
        if not await claim_line(
            ctx, line, limit_request.lease_ttl_s, send, path, started, tenant_slug, deployment_name
        ):
            return
        send = line.recording(send)
    try:
        rate_headers: dict[str, str] = {}
        try:
            admission: Admission | None = await ctx.limiter.admit(limit_request)
        except (RedisError, OSError) as exc:
            if not ctx.config.fail_open:
                unavailable = redis_failed(ctx, exc, tenant_slug, deployment_name)
                await ctx.replies.error(
                    send, rid, method, path, started, unavailable, tenant_slug, deployment_name, protocol=protocol
                )
                return
            admission, limit_request = None, None  # fail open: serve unmetered by the limiter, nothing to settle
        if admission is not None:
            rate_headers = admission.headers
            if not admission.allowed:
                where = (method, path, protocol)
                await _refuse(ctx, send, rid, where, started, tenant_slug, deployment_name, admission)
                return

        outcome = Outcome()
        call = Admitted(parsed, path, send, rid, usage_id, rate_headers, timeout_s, outcome, protocol, method)
        in_flight = (tenant_slug, deployment_name)
        ctx.metrics.in_flight.inc(in_flight)
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.create_task(_wait_disconnect(receive))

        def on_disconnect(done: asyncio.Task[None]) -> None:
            if done.cancelled() or outcome.finished:
                return
            outcome.client_gone = True
            task.cancel()

        if line is None:  # a batch line is answered whole even when its worker went away: the re-run wants it
            watcher.add_done_callback(on_disconnect)
        try:
            await _serve_admitted(ctx, call, deployment)
        except asyncio.CancelledError:
            if not outcome.client_gone:
                raise
            task.uncancel()
            outcome.status = 499
        except Exception:
            # A bug must still settle the limiter and meter the request; the client gets a plain 500.
            log.exception("request %s failed inside the gateway", rid)
            outcome.upstream_error = "internal"
            if not outcome.response_started and not outcome.finished:
                internal = GatewayError(
                    500, "The gateway failed to process the request.", "server_error", "internal_error"
                )
                with contextlib.suppress(Exception):
                    await _send_error(call, internal)
            outcome.status = outcome.status or 500
        finally:
            outcome.finished = True  # a disconnect callback still pending must not cancel the metering below
            watcher.cancel()
            ctx.metrics.in_flight.dec(in_flight)
        await _meter(ctx, call, limit_request, principal, deployment, started, line.batch_id if line else "")
    finally:
        if line is not None:  # after the usage event: a line is never answered for good before it is metered
            await keep_answer(ctx, line)


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _refuse(
    ctx: GatewayContext,
    send: Send,
    rid: str,
    where: tuple[str, str, str],  # method, path, protocol
    started: float,
    tenant: str,
    deployment: str,
    admission: Admission,
) -> None:
    code = admission.code or "rate_limit_exceeded"
    headers = dict(admission.headers)
    if code == "insufficient_quota":
        headers["x-should-retry"] = "false"
        error_type = "insufficient_quota"
    else:
        error_type = "rate_limit_error"
        if admission.retry_after_s is not None:
            headers["retry-after"] = str(max(1, int(admission.retry_after_s + 0.999)))
    ctx.metrics.rejections.inc((tenant, deployment, code))
    error = GatewayError(429, admission.message, error_type, code)
    method, path, protocol = where
    await ctx.replies.error(send, rid, method, path, started, error, tenant, deployment, headers, protocol)


async def _meter(
    ctx: GatewayContext,
    call: Admitted,
    limit_request: LimitRequest | None,
    principal: Principal,
    deployment: DeploymentEntry,
    started: float,
    batch_id: str,
) -> None:
    """The usage event (with the limiter settle), the metrics, the load figures and the access-log line."""
    outcome = call.outcome
    usage_id = call.usage_id
    tenant_slug = principal.tenant.slug
    latency_ms = (time.perf_counter() - started) * 1000
    revision_id = outcome.revision.id if outcome.revision is not None else None
    record = UsageRecord(
        usage_id,
        principal.tenant.id,
        principal.key.id,
        deployment.id,
        revision_id,
        outcome.status,
        outcome.prompt_tokens,
        outcome.completion_tokens,
        latency_ms,
        outcome.ttft_ms,
        batch_id,
        outcome.units if call.parsed.kind in (V2_INFER, V2_METADATA) else 0,
        outcome.units if call.parsed.kind == IMAGES else 0,
    )
    published = revision_id is None or ctx.load.forget(usage_id)
    await ctx.usage.finish(limit_request, record, published)
    m = ctx.metrics
    labels = (tenant_slug, deployment.name)
    m.observe_request(tenant_slug, deployment.name, outcome.status, latency_ms / 1000)
    if outcome.ttft_ms is not None:
        m.ttft.observe(labels, outcome.ttft_ms / 1000)
    if outcome.prompt_tokens:
        m.tokens.inc((*labels, "prompt"), outcome.prompt_tokens)
    if outcome.completion_tokens:
        m.tokens.inc((*labels, "completion"), outcome.completion_tokens)
    if outcome.units:
        m.units.inc((*labels, "image" if call.parsed.kind == IMAGES else "inference"), outcome.units)
    if outcome.upstream_error is not None:
        m.upstream_errors.inc((*labels, outcome.upstream_error))
    if revision_id is not None:
        error = outcome.status >= 500 or outcome.upstream_error is not None
        ctx.load.finished(usage_id, deployment.id, revision_id, latency_ms, outcome.ttft_ms, error)
    ctx.access_log.write(call.rid, call.method, call.path, tenant_slug, deployment.name, outcome.status, latency_ms)


async def _attempt(ctx: GatewayContext, call: Admitted, deployment: DeploymentEntry) -> None:
    """One try at the upstream, within the request's timeout."""
    kind = call.parsed.kind
    async with asyncio.timeout(call.timeout_s):
        if kind == EMBEDDINGS:
            await serve_embeddings(ctx, call, deployment)
        elif kind == IMAGES:
            await serve_images(ctx, call, deployment)
        elif kind in (V2_INFER, V2_METADATA):
            await serve_v2_model(ctx, call, deployment)
        else:
            await serve_generation(ctx, call, deployment)


async def _serve_admitted(ctx: GatewayContext, call: Admitted, deployment: DeploymentEntry) -> None:
    """Route, hold while cold, call the upstream and answer; records everything in ``call.outcome``."""
    outcome = call.outcome
    try:
        deployment = await _wait_until_warm(ctx, deployment)
        # Refused everywhere, a scale-to-zero deployment is starting: held and tried again, like a cold one.
        await serve_holding_refusals(ctx, call, deployment, _attempt)
    except TimeoutError:
        outcome.upstream_error = "timeout"
        if not outcome.response_started:
            error = gateway_timeout(f"'{deployment.name}' did not answer within {call.timeout_s:g} s.")
            if deployment.external:
                error = _unreachable(deployment, call.rid, "timeout", error)
            await _send_error(call, error)
        else:
            message = f"'{deployment.name}' did not finish within {call.timeout_s:g} s."
            await _end_stream(call, GatewayError(504, message, "timeout_error", "timeout"))
    except GatewayError as error:
        if isinstance(error, UpstreamFailure):
            outcome.upstream_error = error.kind
            if deployment.external and not outcome.response_started:
                error = _unreachable(deployment, call.rid, error.kind, error)
        if not outcome.response_started:
            await _send_error(call, error)
        else:
            await _end_stream(call, error)


def _unreachable(deployment: DeploymentEntry, rid: str, kind: str, error: GatewayError) -> GatewayError:
    """A tenant-given endpoint failed before a usable answer: the details go to the log, the client gets one answer.

    Refused by the policy, refused connection, reset, timeout, an answer that is not OpenAI's: were they told
    apart, an external deployment would be a port scanner of whatever its URL can name.
    """
    log.warning(
        "request %s: the endpoint of %s/%s failed (%s): %d %s",
        rid,
        deployment.tenant,
        deployment.name,
        kind,
        error.status,
        error.message,
    )
    return upstream_unavailable(deployment.name)


async def _send_error(call: Admitted, error: GatewayError) -> None:
    outcome = call.outcome
    outcome.status = error.status
    outcome.finished = True
    await respond(
        call.send, error.status, error.render(call.protocol), call.rid, {**call.rate_headers, **error.headers}
    )


async def _end_stream(call: Admitted, error: GatewayError) -> None:
    """End a stream that failed after its 200 went out: an error event, no [DONE], metered with the error's status."""
    outcome = call.outcome
    outcome.status = error.status if error.status >= 500 else 502
    outcome.finished = True
    event = stream_error_event(error.message, error.code or DISCONNECTED)
    await call.send({"type": "http.response.body", "body": event, "more_body": False})


async def _wait_until_warm(ctx: GatewayContext, deployment: DeploymentEntry) -> DeploymentEntry:
    """Hold a request for a scaled-to-zero deployment until a snapshot gives it an endpoint (bounded)."""
    if not deployment.cold:
        return deployment
    deadline = enter_hold(ctx, deployment)
    try:
        return await until_warm(ctx, deployment, deadline, readmit=False)
    finally:
        ctx.cold.held -= 1
