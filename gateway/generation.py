"""Chat and text completions: the upstream call for the revision picked, relayed whole or as a stream."""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.asgi import encode_headers, respond
from gateway.context import GatewayContext
from gateway.errors import UpstreamFailure, bad_gateway, is_openai_error
from gateway.outcome import DISCONNECTED, SSE_HEADERS, Admitted
from gateway.proxy import StreamRelay, connection_failed, end_attempt, open_upstream, rewrite_model
from gateway.snapshot_index import DeploymentEntry, RevisionEntry
from gateway.transport import UpstreamAnswer
from gateway.validation import COMPLETIONS, ParsedRequest


def upstream_body(parsed: ParsedRequest, model: str, tenant_given: bool = False) -> bytes:
    """The body sent upstream: the client's, with the upstream model and the reserved completion limit.

    The per-choice limit the reservation was made with replaces every limit field sent, so the upstream cannot
    generate more than was reserved; a body without a limit is never sent (vLLM would run it to the context length).
    Completions know ``max_tokens`` only. For chat, every server the platform runs (vLLM, TGI, Triton, the built-in)
    reads ``max_tokens``, and vLLM prefers ``max_completion_tokens`` when present: platform replicas get
    ``max_tokens``, plus ``max_completion_tokens`` (same value) when the client sent it. A tenant-given endpoint
    may be OpenAI itself, which refuses both fields together and, for reasoning models, ``max_tokens``: it gets
    one field, ``max_tokens`` only when that is all the client sent, else ``max_completion_tokens``.
    """
    payload = {**parsed.payload, "model": model}
    limit = parsed.choice_limit
    newer_sent = payload.get("max_completion_tokens") is not None
    if parsed.kind == COMPLETIONS:
        payload["max_tokens"] = limit
        payload.pop("max_completion_tokens", None)
    elif not tenant_given:
        payload["max_tokens"] = limit
        if newer_sent:
            payload["max_completion_tokens"] = limit
    elif newer_sent or payload.get("max_tokens") is None:
        payload["max_completion_tokens"] = limit
        payload.pop("max_tokens", None)
    else:
        payload["max_tokens"] = limit
    if parsed.stream:
        options = payload.get("stream_options") or {}
        payload["stream_options"] = {**options, "include_usage": True}
    return orjson.dumps(payload)


async def serve_generation(ctx: GatewayContext, call: Admitted, deployment: DeploymentEntry) -> None:
    """Call a replica of ``deployment`` for a chat or text completion and relay its answer to the client."""
    parsed = call.parsed
    outcome = call.outcome
    bodies: dict[tuple[str, bool], bytes] = {}

    def body_for(revision: RevisionEntry) -> bytes:
        # Each revision names the model its replicas serve; the body is encoded once per model.
        key = (revision.model or deployment.model, revision.tenant_given)
        body = bodies.get(key)
        if body is None:
            body = bodies[key] = upstream_body(parsed, *key)
        return body

    outcome.upstream_at = time.perf_counter()
    attempt = await open_upstream(ctx, call, deployment, body_for)
    response = attempt.response
    patterns = attempt.revision.model_patterns or deployment.model_patterns
    clean = False
    try:
        if response.status >= 300 or response.status < 200:
            # A redirect is not followed (its target was never checked) and is no answer: 502 like the rest.
            await _relay_upstream_error(call, response, deployment, patterns)
        elif parsed.stream and response.content_type == "text/event-stream":
            await _relay_stream(call, response, deployment, patterns)
        else:
            data = await response.read()
            outcome.charge(_usage_of(data), parsed.prompt_estimate, parsed.max_tokens, call.rid, deployment.name)
            outcome.status = 200
            outcome.finished = True
            await respond(call.send, 200, rewrite_model(data, patterns), call.rid, call.rate_headers)
        clean = True
    except OSError as exc:  # the transports' UpstreamReset
        raise connection_failed(exc) from None
    finally:
        end_attempt(ctx, attempt, clean)


def _usage_of(data: bytes) -> Any:
    """The answer's ``usage`` as sent (``Outcome.charge`` judges it); None when the answer is not a JSON object."""
    try:
        answer = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return answer.get("usage") if isinstance(answer, dict) else None


async def _relay_upstream_error(
    call: Admitted, response: UpstreamAnswer, deployment: DeploymentEntry, patterns: tuple[tuple[bytes, bytes], ...]
) -> None:
    data = await response.read()
    outcome = call.outcome
    # Only a client error in OpenAI's shape is the client's to read; our credentials (401/403) are not its business.
    if response.status < 400 or response.status >= 500 or response.status in (401, 403) or not is_openai_error(data):
        outcome.upstream_error = "status"
        raise UpstreamFailure(
            bad_gateway(f"The model server for '{deployment.name}' answered {response.status}."), "status"
        )
    # A client error the model server found (e.g. context too long) is the client's to read, as-is.
    outcome.status = response.status
    outcome.finished = True
    await respond(call.send, response.status, rewrite_model(data, patterns), call.rid, call.rate_headers)


async def _relay_stream(
    call: Admitted, response: UpstreamAnswer, deployment: DeploymentEntry, patterns: tuple[tuple[bytes, bytes], ...]
) -> None:
    parsed, outcome, send = call.parsed, call.outcome, call.send
    relay = StreamRelay(patterns, hide_usage=not parsed.include_usage)
    headers = [*SSE_HEADERS, (b"x-request-id", call.rid.encode()), *encode_headers(call.rate_headers)]
    outcome.status = 200
    try:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        outcome.response_started = True
        try:
            async for data in response.iter_any():
                if outcome.ttft_ms is None:
                    outcome.ttft_ms = (time.perf_counter() - outcome.upstream_at) * 1000
                out = relay.feed(data)
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
        except OSError as exc:  # the transports' UpstreamReset
            if not relay.done:  # after [DONE] the client has the whole answer: a broken ending changes nothing
                raise UpstreamFailure(
                    bad_gateway(f"The model server connection broke mid-stream: {type(exc).__name__}.", DISCONNECTED),
                    "reset",
                ) from None
        else:
            out = relay.finish()  # a body that ended cleanly ends its last event too
            if out:
                await send({"type": "http.response.body", "body": out, "more_body": True})
        if not relay.done:
            # A stream without [DONE] is cut short, however cleanly its body ended: the client must not take it
            # for a whole answer (``_end_stream`` in the pipeline sends the error event).
            raise UpstreamFailure(
                bad_gateway("The model server ended the stream before it was complete.", DISCONNECTED), "truncated"
            )
    finally:
        # Whatever ended the stream, meter what was relayed (the usage chunk when it came).
        usage = relay.usage
        if usage is not None:
            outcome.charge(usage, parsed.prompt_estimate, parsed.max_tokens, call.rid, deployment.name)
        else:
            outcome.prompt_tokens = parsed.prompt_estimate
            outcome.completion_tokens = relay.completion_tokens
    outcome.finished = True
    await send({"type": "http.response.body", "body": b"", "more_body": False})
