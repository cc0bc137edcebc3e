"""The inference request pipeline: auth -> body -> validation -> model -> limits -> route -> relay -> meter.

Everything before the limiter is answered from memory. From the moment the limiter admits a request, exactly
one usage event is written for it (with the limiter settle, in one round trip), whatever happens next:
success, upstream error, timeout or client disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from controlplane.contracts.redis_names import wake_key
from gateway.asgi import Receive, Scope, Send, respond
from gateway.auth import INFERENCE_SCOPE
from gateway.coldhold import serve_holding_refusals
from gateway.embeddings import serve_embeddings
from gateway.errors import (
    GatewayError,
    body_too_large,
    gateway_timeout,
    model_not_found,
    service_unavailable,
    stream_error_event,
    upstream_unavailable,
)
from gateway.generation import serve_generation
from gateway.limits import Admission, LimitRequest
from gateway.outcome import DISCONNECTED, LEASE_MARGIN_S, ClientGone, Outcome
from gateway.proxy import UpstreamFailure
from gateway.snapshot import DeploymentEntry
from gateway.usage import UsageRecord
from gateway.validation import EMBEDDINGS, ParsedRequest, parse_request

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("frontdoor.gateway.inference")

WAKE_EVERY_S = 5.0  # per deployment and process: the autoscaler needs one signal, not one per request


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
    gw: Gateway,
    kind: str,
    scope: Scope,
    receive: Receive,
    send: Send,
    rid: str,
    client_rid: bool,
    authorization: bytes | None,
    content_length: bytes | None,
    started: float,
) -> None:
    """Serve one POST to an inference route; ``client_rid``: the x-request-id came from the client."""
    path: str = scope["path"]
    snapshot = gw.store.current
    tenant_slug = deployment_name = ""
    try:
        principal = gw.auth.authenticate(authorization, snapshot, (INFERENCE_SCOPE,))
        tenant_slug = principal.tenant.slug
        body = await read_body(receive, content_length, gw.config.max_body_bytes)
        parsed = parse_request(kind, body, gw.config)
        deployment = snapshot.deployments.get((tenant_slug, parsed.model))
        if deployment is None:
            raise model_not_found(parsed.model)
        deployment_name = deployment.name
        if deployment.state != "running":
            raise service_unavailable(f"The deployment '{deployment.name}' is stopped.", "deployment_stopped")
    except GatewayError as error:
        await gw._plain_error(send, rid, "POST", path, started, error, tenant_slug, deployment_name)
        return
    except ClientGone:
        gw.finish_plain(rid, "POST", path, tenant_slug, deployment_name, 499, started)
        return

    # Lease ids and usage dedup use our own id: a client reusing its x-request-id must not merge requests.
    usage_id = f"{rid}.{os.urandom(6).hex()}" if client_rid else rid
    timeout_s = deployment.timeout_s or gw.config.total_timeout_s
    limit_request: LimitRequest | None = LimitRequest(
        request_id=usage_id,
        key_id=principal.key.key_id,
        key_limits=principal.key.limits,
        tenant=tenant_slug,
        tenant_limits=principal.tenant.limits,
        deployment_id=deployment.id,
        deployment_max_concurrent=deployment.max_concurrent,
        estimated_tokens=parsed.prompt_estimate + parsed.max_tokens,
        lease_ttl_s=timeout_s + gw.config.cold_hold_s + LEASE_MARGIN_S,
    )
    assert limit_request is not None
    rate_headers: dict[str, str] = {}
    try:
        admission: Admission | None = await gw.limiter.admit(limit_request)
    except (RedisError, OSError) as exc:
        if not gw.config.fail_open:
            unavailable = service_unavailable(
                f"Rate limiting is unavailable ({type(exc).__name__}); retry shortly.", "limiter_unavailable", 1.0
            )
            gw.metrics.upstream_errors.inc((tenant_slug, deployment_name, "redis"))
            await gw._plain_error(send, rid, "POST", path, started, unavailable, tenant_slug, deployment_name)
            return
        admission, limit_request = None, None  # fail open: serve unmetered by the limiter, nothing to settle
    if admission is not None:
        rate_headers = admission.headers
        if not admission.allowed:
            await _refuse(gw, send, rid, path, started, tenant_slug, deployment_name, admission)
            return

    outcome = Outcome()
    in_flight = (tenant_slug, deployment_name)
    gw.metrics.in_flight.inc(in_flight)
    task = asyncio.current_task()
    assert task is not None
    watcher = asyncio.create_task(_wait_disconnect(receive))

    def on_disconnect(done: asyncio.Task[None]) -> None:
        if done.cancelled() or outcome.finished:
            return
        outcome.client_gone = True
        task.cancel()

    watcher.add_done_callback(on_disconnect)
    try:
        await _serve_admitted(gw, parsed, deployment, path, send, rid, usage_id, rate_headers, outcome, timeout_s)
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
            internal = GatewayError(500, "The gateway failed to process the request.", "server_error", "internal_error")
            with contextlib.suppress(Exception):
                await _send_error(send, rid, internal, rate_headers, outcome)
        outcome.status = outcome.status or 500
    finally:
        outcome.finished = True  # a disconnect callback still pending must not cancel the metering below
        watcher.cancel()
        gw.metrics.in_flight.dec(in_flight)
    await _meter(
        gw,
        limit_request,
        principal.tenant.id,
        principal.key.id,
        deployment,
        usage_id,
        rid,
        path,
        outcome,
        started,
        tenant_slug,
    )


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _refuse(
    gw: Gateway, send: Send, rid: str, path: str, started: float, tenant: str, deployment: str, admission: Admission
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
    gw.metrics.rejections.inc((tenant, deployment, code))
    error = GatewayError(429, admission.message, error_type, code)
    await gw._plain_error(send, rid, "POST", path, started, error, tenant, deployment, headers)


async def _meter(
    gw: Gateway,
    limit_request: LimitRequest | None,
    tenant_id: int,
    key_id: int,
    deployment: DeploymentEntry,
    usage_id: str,
    rid: str,
    path: str,
    outcome: Outcome,
    started: float,
    tenant_slug: str,
) -> None:
    latency_ms = (time.perf_counter() - started) * 1000
    revision_id = outcome.revision.id if outcome.revision is not None else None
    record = UsageRecord(
        usage_id,
        tenant_id,
        key_id,
        deployment.id,
        revision_id,
        outcome.status,
        outcome.prompt_tokens,
        outcome.completion_tokens,
        latency_ms,
        outcome.ttft_ms,
    )
    published = revision_id is None or gw.load.forget(usage_id)
    await gw.usage.finish(limit_request, record, published)
    m = gw.metrics
    labels = (tenant_slug, deployment.name)
    m.observe_request(tenant_slug, deployment.name, outcome.status, latency_ms / 1000)
    if outcome.ttft_ms is not None:
        m.ttft.observe(labels, outcome.ttft_ms / 1000)
    if outcome.prompt_tokens:
        m.tokens.inc((*labels, "prompt"), outcome.prompt_tokens)
    if outcome.completion_tokens:
        m.tokens.inc((*labels, "completion"), outcome.completion_tokens)
    if outcome.upstream_error is not None:
        m.upstream_errors.inc((*labels, outcome.upstream_error))
    if revision_id is not None:
        error = outcome.status >= 500 or outcome.upstream_error is not None
        gw.load.finished(usage_id, deployment.id, revision_id, latency_ms, outcome.ttft_ms, error)
    gw.access_log.write(rid, "POST", path, tenant_slug, deployment.name, outcome.status, latency_ms)


async def _serve_admitted(
    gw: Gateway,
    parsed: ParsedRequest,
    deployment: DeploymentEntry,
    path: str,
    send: Send,
    rid: str,
    usage_id: str,
    rate_headers: dict[str, str],
    outcome: Outcome,
    timeout_s: float,
) -> None:
    """Route, hold while cold, call the upstream and answer; records everything in ``outcome``."""

    async def attempt(current: DeploymentEntry) -> None:
        async with asyncio.timeout(timeout_s):
            if parsed.kind == EMBEDDINGS:
                await serve_embeddings(gw, parsed, current, send, rid, usage_id, rate_headers, outcome, timeout_s)
            else:
                await serve_generation(gw, parsed, current, path, send, rid, usage_id, rate_headers, outcome, timeout_s)

    try:
        deployment = await _wait_until_warm(gw, deployment)
        # Refused everywhere, a scale-to-zero deployment is starting: held and tried again, like a cold one.
        await serve_holding_refusals(gw, deployment, outcome, attempt, _signal_wake)
    except TimeoutError:
        outcome.upstream_error = "timeout"
        if not outcome.response_started:
            error = gateway_timeout(f"'{deployment.name}' did not answer within {timeout_s:g} s.")
            if deployment.external:
                error = _unreachable(deployment, rid, "timeout", error)
            await _send_error(send, rid, error, rate_headers, outcome)
        else:
            message = f"'{deployment.name}' did not finish within {timeout_s:g} s."
            await _end_stream(send, outcome, GatewayError(504, message, "timeout_error", "timeout"))
    except GatewayError as error:
        if isinstance(error, UpstreamFailure):
            outcome.upstream_error = error.kind
            if deployment.external and not outcome.response_started:
                error = _unreachable(deployment, rid, error.kind, error)
        if not outcome.response_started:
            await _send_error(send, rid, error, rate_headers, outcome)
        else:
            await _end_stream(send, outcome, error)


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


async def _send_error(
    send: Send, rid: str, error: GatewayError, rate_headers: dict[str, str], outcome: Outcome
) -> None:
    outcome.status = error.status
    outcome.finished = True
    await respond(send, error.status, error.body(), rid, {**rate_headers, **error.headers})


async def _end_stream(send: Send, outcome: Outcome, error: GatewayError) -> None:
    """End a stream that failed after its 200 went out: an error event, no [DONE], metered with the error's status."""
    outcome.status = error.status if error.status >= 500 else 502
    outcome.finished = True
    event = stream_error_event(error.message, error.code or DISCONNECTED)
    await send({"type": "http.response.body", "body": event, "more_body": False})


async def _wait_until_warm(gw: Gateway, deployment: DeploymentEntry) -> DeploymentEntry:
    """Hold a request for a scaled-to-zero deployment until a snapshot gives it an endpoint (bounded)."""
    if not deployment.cold:
        return deployment
    if gw.cold_held >= gw.config.cold_queue_max:
        raise service_unavailable(
            f"Too many requests are waiting for '{deployment.name}' to start.",
            "deployment_starting",
            gw.config.cold_hold_s,
        )
    gw.cold_held += 1
    try:
        deadline = time.monotonic() + gw.config.cold_hold_s
        key = (deployment.tenant, deployment.name)
        while True:
            await _signal_wake(gw, deployment.id)
            left = deadline - time.monotonic()
            if left <= 0:
                raise service_unavailable(
                    f"The deployment '{deployment.name}' is starting; retry shortly.", "deployment_starting", 5.0
                )
            await gw.store.wait_for_change(min(left, WAKE_EVERY_S))
            current = gw.store.current.deployments.get(key)
            if current is None:
                raise model_not_found(deployment.name)
            deployment = current
            if not deployment.cold:
                return deployment
    finally:
        gw.cold_held -= 1


async def _signal_wake(gw: Gateway, deployment_id: int) -> None:
    now = time.monotonic()
    if now - gw.wake_sent.get(deployment_id, -WAKE_EVERY_S) < WAKE_EVERY_S:
        return
    gw.wake_sent[deployment_id] = now
    pipe = gw.redis.pipeline(transaction=False)
    pipe.set(wake_key(gw.config.redis_prefix, deployment_id), str(time.time()), ex=60)
    pipe.publish(gw.wake_channel, str(deployment_id))
    try:
        await pipe.execute()
    except (RedisError, OSError):
        gw.wake_sent.pop(deployment_id, None)  # try again on the next round
