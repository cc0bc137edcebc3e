"""Chat and text completions: the upstream call for the revision picked, relayed whole or as a stream."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from gateway.asgi import Send, encode_headers, respond
from gateway.errors import bad_gateway
from gateway.outcome import LEASE_MARGIN_S, SSE_HEADERS, UPSTREAM_PATHS, Outcome
from gateway.proxy import StreamRelay, UpstreamFailure, open_upstream, rewrite_model
from gateway.snapshot import DeploymentEntry, RevisionEntry
from gateway.upstream import UpstreamResponse
from gateway.validation import ParsedRequest

if TYPE_CHECKING:
    from gateway.app import Gateway


def _upstream_body(parsed: ParsedRequest, model: str) -> bytes:
    payload = parsed.payload
    payload["model"] = model
    if parsed.stream:
        options = payload.get("stream_options") or {}
        payload["stream_options"] = {**options, "include_usage": True}
    return orjson.dumps(payload)


async def serve_generation(
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
