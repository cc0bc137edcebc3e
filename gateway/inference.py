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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from redis.exceptions import RedisError

from gateway.asgi import Receive, Scope, Send, encode_headers, respond
from gateway.auth import INFERENCE_SCOPE
from gateway.errors import (
    GatewayError,
    bad_gateway,
    body_too_large,
    gateway_timeout,
    model_not_found,
    service_unavailable,
)
from gateway.limits import Admission, LimitRequest
from gateway.proxy import StreamRelay, UpstreamFailure, open_upstream, rewrite_model
from gateway.routing import NoReplica
from gateway.snapshot import DeploymentEntry, RevisionEntry
from gateway.upstream import UpstreamResponse
from gateway.usage import UsageRecord
from gateway.validation import EMBEDDINGS, ParsedRequest, parse_request

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("frontdoor.gateway.inference")

LEASE_MARGIN_S = 30.0
WAKE_EVERY_S = 5.0  # per deployment and process: the autoscaler needs one signal, not one per request
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
UPSTREAM_PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions", EMBEDDINGS: "/v1/embeddings"}


class ClientGone(Exception):
    """The client disconnected while we were reading its body."""


@dataclass(slots=True)
class Outcome:
    """What the admitted request did, filled in as it goes; becomes the usage event."""

    status: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None
    revision: RevisionEntry | None = None
    response_started: bool = False
    finished: bool = False  # the last body message is being sent: a disconnect now is not an abort
    client_gone: bool = False
    upstream_error: str | None = None
    upstream_at: float = 0.0  # perf_counter when the upstream request was sent (TTFT's start)


async def read_body(receive: Receive, content_length: bytes | None, limit: int) -> bytes:
    """The request body, refusing with 413 as soon as it is known to exceed ``limit`` (without reading it all)."""
    if content_length is not None:
        try:
            if int(content_length) > limit:
                raise body_too_large(limit)
        except ValueError:
            pass
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
    try:
        deployment = await _wait_until_warm(gw, deployment)
        async with asyncio.timeout(timeout_s):
            if parsed.kind == EMBEDDINGS:
                await _serve_embeddings(gw, parsed, deployment, send, rid, usage_id, rate_headers, outcome, timeout_s)
            else:
                await _serve_generation(
                    gw, parsed, deployment, path, send, rid, usage_id, rate_headers, outcome, timeout_s
                )
    except TimeoutError:
        outcome.upstream_error = "timeout"
        if not outcome.response_started:
            await _send_error(
                send,
                rid,
                gateway_timeout(f"'{deployment.name}' did not answer within {timeout_s:g} s."),
                rate_headers,
                outcome,
            )
        else:
            await _end_stream(send, outcome)
    except GatewayError as error:
        if isinstance(error, UpstreamFailure):
            outcome.upstream_error = error.kind
        if not outcome.response_started:
            await _send_error(send, rid, error, rate_headers, outcome)
        else:
            await _end_stream(send, outcome)


async def _send_error(
    send: Send, rid: str, error: GatewayError, rate_headers: dict[str, str], outcome: Outcome
) -> None:
    outcome.status = error.status
    outcome.finished = True
    await respond(send, error.status, error.body(), rid, {**rate_headers, **error.headers})


async def _end_stream(send: Send, outcome: Outcome) -> None:
    outcome.finished = True
    await send({"type": "http.response.body", "body": b"", "more_body": False})


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
    prefix = gw.config.redis_prefix
    pipe = gw.redis.pipeline(transaction=False)
    pipe.set(f"{prefix}:wake:{deployment_id}", str(time.time()), ex=60)
    pipe.publish(f"{prefix}:wake", str(deployment_id))
    try:
        await pipe.execute()
    except (RedisError, OSError):
        gw.wake_sent.pop(deployment_id, None)  # try again on the next round


def _upstream_body(parsed: ParsedRequest, model: str) -> bytes:
    payload = parsed.payload
    payload["model"] = model
    if parsed.stream:
        options = payload.get("stream_options") or {}
        payload["stream_options"] = {**options, "include_usage": True}
    return orjson.dumps(payload)


async def _serve_generation(
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
    cfg = gw.config
    bodies: dict[str, bytes] = {}

    def body_for(revision: RevisionEntry) -> bytes:
        # Each revision names the model its replicas serve; the body is encoded once per model.
        model = revision.model or deployment.model
        if model not in bodies:
            bodies[model] = _upstream_body(parsed, model)
        return bodies[model]

    def on_pick(revision: RevisionEntry, endpoint: str) -> None:
        if outcome.revision is None:
            gw.load.started(usage_id, deployment.id, revision.id, timeout_s + LEASE_MARGIN_S)
        outcome.revision = revision

    outcome.upstream_at = time.perf_counter()
    attempt = await open_upstream(
        gw.upstream,
        gw.balancer,
        deployment,
        UPSTREAM_PATHS[parsed.kind],
        body_for,
        rid,
        cfg.retries,
        min(cfg.first_byte_timeout_s, timeout_s),
        cfg.connect_timeout_s,
        on_pick,
        lambda endpoint: gw.metrics.upstream_errors.inc((deployment.tenant, deployment.name, "connect")),
    )
    response = attempt.response
    patterns = attempt.revision.model_patterns or deployment.model_patterns
    clean = False
    try:
        if response.status >= 400:
            await _relay_upstream_error(response, deployment, patterns, send, rid, rate_headers, outcome)
        elif parsed.stream and response.content_type == "text/event-stream":
            await _relay_stream(gw, parsed, patterns, response, send, rid, rate_headers, outcome)
        else:
            data = await response.read()
            usage = _usage_of(data)
            outcome.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            outcome.completion_tokens = int(usage.get("completion_tokens") or 0)
            outcome.status = 200
            outcome.finished = True
            await respond(send, 200, rewrite_model(data, patterns), rid, rate_headers)
        clean = True
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamFailure(
            bad_gateway(f"The model server connection failed: {type(exc).__name__}."), "reset"
        ) from None
    finally:
        # A clean end hands the connection back to the pool; anything else (disconnect, timeout) closes it,
        # which is what tells the model server to stop generating.
        if clean:
            response.release()
        else:
            response.close()
        gw.balancer.release(attempt.endpoint)


def _usage_of(data: bytes) -> dict[str, Any]:
    try:
        usage = orjson.loads(data).get("usage")
    except (orjson.JSONDecodeError, AttributeError):
        return {}
    return usage if isinstance(usage, dict) else {}


async def _relay_upstream_error(
    response: UpstreamResponse,
    deployment: DeploymentEntry,
    patterns: tuple[tuple[bytes, bytes], ...],
    send: Send,
    rid: str,
    rate_headers: dict[str, str],
    outcome: Outcome,
) -> None:
    data = await response.read()
    if response.status >= 500 or response.status in (401, 403):  # our credentials are not the client's business
        outcome.upstream_error = "status"
        raise bad_gateway(f"The model server for '{deployment.name}' answered {response.status}.")
    try:
        valid = isinstance(orjson.loads(data).get("error"), dict)
    except (orjson.JSONDecodeError, AttributeError):
        valid = False
    if not valid:
        outcome.upstream_error = "status"
        raise bad_gateway(f"The model server for '{deployment.name}' answered {response.status}.")
    # A client error the model server found (e.g. context too long) is the client's to read, as-is.
    outcome.status = response.status
    outcome.finished = True
    await respond(send, response.status, rewrite_model(data, patterns), rid, rate_headers)


async def _relay_stream(
    gw: Gateway,
    parsed: ParsedRequest,
    patterns: tuple[tuple[bytes, bytes], ...],
    response: UpstreamResponse,
    send: Send,
    rid: str,
    rate_headers: dict[str, str],
    outcome: Outcome,
) -> None:
    relay = StreamRelay(patterns, hide_usage=not parsed.include_usage)
    headers = [*SSE_HEADERS, (b"x-request-id", rid.encode()), *encode_headers(rate_headers)]
    outcome.status = 200
    try:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        outcome.response_started = True
        async for data in response.iter_any():
            if outcome.ttft_ms is None:
                outcome.ttft_ms = (time.perf_counter() - outcome.upstream_at) * 1000
            out = relay.feed(data)
            if out:
                await send({"type": "http.response.body", "body": out, "more_body": True})
        if not relay.done:
            outcome.upstream_error = "truncated"
    finally:
        # Whatever ended the stream, meter what was relayed (the usage chunk when it came).
        usage = relay.usage
        if usage is not None:
            outcome.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            outcome.completion_tokens = int(usage.get("completion_tokens") or 0)
        else:
            outcome.prompt_tokens = parsed.prompt_estimate
            outcome.completion_tokens = relay.completion_tokens
    outcome.finished = True
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def embeddings_batch_key(endpoint: str, payload: dict[str, Any]) -> str:
    """Requests merge only when they go to the same replica, for the same model, with the same options."""
    options = (str(payload.get("encoding_format") or ""), str(payload.get("dimensions") or ""))
    return "\x00".join((endpoint, str(payload["model"]), *options))


async def send_embeddings_batch(gw: Gateway, batch_key: str, body: dict[str, Any]) -> dict[str, Any]:
    """The batcher's ``send``: POST one (possibly merged) embeddings body to the replica named in the key."""
    endpoint = batch_key.split("\x00", 1)[0]
    cfg = gw.config
    timeout = aiohttp.ClientTimeout(total=None, connect=cfg.connect_timeout_s, sock_connect=cfg.connect_timeout_s)
    try:
        async with gw.session.post(
            endpoint + "/v1/embeddings",
            data=orjson.dumps(body),
            headers={"content-type": "application/json"},
            timeout=timeout,
        ) as response:
            data = await response.read()
            if response.status >= 400:
                raise UpstreamFailure(bad_gateway(f"The model server answered {response.status}."), "status")
    except aiohttp.ClientConnectorError:
        gw.balancer.eject(endpoint)
        raise UpstreamFailure(
            service_unavailable("The replica refused the connection.", "no_replica_available", 1.0), "connect"
        ) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamFailure(
            bad_gateway(f"The model server connection failed: {type(exc).__name__}."), "reset"
        ) from None
    try:
        result = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamFailure(bad_gateway("The model server sent invalid JSON."), "status") from None
    if not isinstance(result, dict):
        raise UpstreamFailure(bad_gateway("The model server sent an unexpected answer."), "status")
    return result


async def _serve_embeddings(
    gw: Gateway,
    parsed: ParsedRequest,
    deployment: DeploymentEntry,
    send: Send,
    rid: str,
    usage_id: str,
    rate_headers: dict[str, str],
    outcome: Outcome,
    timeout_s: float,
) -> None:
    payload = parsed.payload
    excluded: set[str] = set()
    for attempt in range(gw.config.retries + 1):
        try:
            revision, endpoint = gw.balancer.pick(deployment, frozenset(excluded))
        except NoReplica as exc:
            raise UpstreamFailure(
                service_unavailable(
                    f"No replica of '{deployment.name}' is reachable.", "no_replica_available", exc.retry_after_s
                ),
                "no_replica",
            ) from None
        if outcome.revision is None:
            gw.load.started(usage_id, deployment.id, revision.id, timeout_s + LEASE_MARGIN_S)
        outcome.revision = revision
        payload["model"] = revision.model or deployment.model
        gw.balancer.acquire(endpoint)
        try:
            result = await gw.batcher.submit(embeddings_batch_key(endpoint, payload), payload)
            break
        except UpstreamFailure as failure:
            if failure.kind != "connect" or attempt == gw.config.retries:
                raise
            excluded.add(endpoint)
        except ValueError as exc:  # the batcher could not split a merged answer
            raise UpstreamFailure(bad_gateway(f"The model server sent a bad batch answer: {exc}"), "status") from None
        finally:
            gw.balancer.release(endpoint)
    usage = result.get("usage")
    if not isinstance(usage, dict):
        usage = {}
    outcome.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    result["model"] = deployment.name
    outcome.status = 200
    outcome.finished = True
    await respond(send, 200, orjson.dumps(result), rid, rate_headers)
