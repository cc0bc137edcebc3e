"""Batch lines at the gateway: who sent one, on whose behalf, and its answer given at most once.

A Celery worker of the control plane sends each line of a batch to the inference route it names, with the internal
token instead of a key, the public id of the key that created the batch, the batch id and the line's own request id
(``controlplane.contracts.batch_wire``). ``parse_line`` checks those; the pipeline (``gateway.inference``) then
serves the line as that key's request. Before admission ``claim_line`` holds the line's id in Redis: a line whose
answer is already kept gets that answer back (neither admitted, reserved nor metered again), one still in flight a
409. After the usage event, ``keep_answer`` keeps a final answer for the line's re-runs, or drops the hold when the
answer is one the worker tries again. A line outlives the worker's connection: its worker may have been killed,
and the answer is what the re-run will want.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from controlplane.contracts import batch_wire
from controlplane.contracts.redis_names import batch_line_key
from gateway.asgi import Message, Scope, Send, respond
from gateway.context import GatewayContext
from gateway.errors import GatewayError, invalid_api_key, invalid_request, service_unavailable

log = logging.getLogger("frontdoor.gateway.batch_lines")

INTERNAL_TOKEN = batch_wire.TOKEN_HEADER.encode()
_ON_BEHALF = batch_wire.ON_BEHALF_HEADER.encode()
_BATCH = batch_wire.BATCH_HEADER.encode()
# The answers a batch worker tries again (limits, conflicts, the gateway's or the model's failures, a worker that
# went away before its answer): never kept, so that the next try runs the line again.
_RETRIED = frozenset({409, 429, 499})


@dataclass(slots=True)
class BatchLine:
    """A batch line the worker sent: on whose behalf, for which batch, under which id, and the answer it got."""

    key_id: str  # the public id of the key that created the batch
    batch_id: str
    request_id: str  # the line's own id, the same on every re-run
    status: int = 0
    body: list[bytes] = field(default_factory=list)
    complete: bool = False  # the last body message went out
    sender_gone: bool = False

    def recording(self, send: Send) -> Send:
        """``send``, noting the status and the body of the answer as they go out."""

        async def recorded(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
            elif message["type"] == "http.response.body":
                self.body.append(message.get("body", b""))
                self.complete = not message.get("more_body", False)
            if self.sender_gone:
                return
            try:
                await send(message)
            except OSError:
                # The worker went away; the line is still answered whole and kept, for the worker's re-run.
                self.sender_gone = True

        return recorded

    def keeps(self) -> bool:
        """Whether the answer is final, to be kept for re-runs: whole, and nothing the worker tries again."""
        return self.complete and self.status < 500 and self.status not in _RETRIED


def parse_line(scope: Scope, token: bytes, rid_header: bytes | None, expected_token: str) -> BatchLine:
    """The batch line a request with the internal token header is, or the 401 / 400 its sender must see."""
    if not batch_wire.token_matches(token, expected_token):
        raise invalid_api_key("Incorrect internal token provided.")
    on_behalf = batch = None
    for name, value in scope["headers"]:
        if name == _ON_BEHALF:
            on_behalf = value
        elif name == _BATCH:
            batch = value
    key_id, batch_id, request_id = _plain_id(on_behalf), _plain_id(batch), _plain_id(rid_header)
    if key_id is None:
        raise _bad_line(f"'{batch_wire.ON_BEHALF_HEADER}' must name the public id of the key that created the batch.")
    if batch_id is None or not batch_id.startswith("batch_"):
        raise _bad_line(f"'{batch_wire.BATCH_HEADER}' must name the batch ('batch_...').")
    if request_id is None:
        raise _bad_line(f"'x-request-id' must name the line: 1 to {batch_wire.MAX_REQUEST_ID} of [A-Za-z0-9_-].")
    return BatchLine(key_id, batch_id, request_id)


def _plain_id(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    value = raw.decode("latin-1")
    return value if batch_wire.is_plain_id(value) else None


def _bad_line(message: str) -> GatewayError:
    return invalid_request(message, None, "invalid_batch_line")


async def claim_line(
    ctx: GatewayContext,
    line: BatchLine,
    lease_ttl_s: float,
    send: Send,
    path: str,
    started: float,
    tenant: str,
    deployment: str,
) -> bool:
    """Hold ``line`` for this try (True), or answer it here (False) with what a try before answered, or with 409
    while one is still in flight. Redis unreachable: 503, never an answer that could not be kept.
    """
    rid = line.request_id
    key = batch_line_key(ctx.config.redis_prefix, rid)
    try:
        if await ctx.redis.set(key, batch_wire.PENDING, nx=True, px=max(1, int(lease_ttl_s * 1000))):
            return True
        held = await ctx.redis.get(key)
    except (RedisError, OSError) as exc:
        unavailable = redis_failed(ctx, exc, tenant, deployment)
        await ctx.replies.error(send, rid, "POST", path, started, unavailable, tenant, deployment)
        return False
    answer = batch_wire.decode_answer(held) if held is not None else None
    if answer is None:  # in flight, or gone since the SET (a try that ended retryable): the sender tries again
        busy = GatewayError(
            409,
            "This batch line is being answered by another try; retry shortly.",
            "conflict_error",
            "batch_line_in_progress",
            headers={"retry-after": "1"},
        )
        await ctx.replies.error(send, rid, "POST", path, started, busy, tenant, deployment)
        return False
    status, body = answer
    await respond(send, status, body, rid, {batch_wire.REPLAYED_HEADER: "true"})
    ctx.replies.finished(rid, "POST", path, tenant, deployment, status, started)
    return False


async def keep_answer(ctx: GatewayContext, line: BatchLine) -> None:
    """Keep the line's answer for its re-runs when it is final; else drop the hold, so that a retry runs it again."""
    key = batch_line_key(ctx.config.redis_prefix, line.request_id)
    try:
        if line.keeps():
            answer = batch_wire.encode_answer(line.status, b"".join(line.body))
            await ctx.redis.set(key, answer, px=max(1, int(ctx.config.batch_replay_ttl_s * 1000)))
        else:
            await ctx.redis.delete(key)
    except (RedisError, OSError) as exc:
        # The hold stays until its lease expires: re-runs get 409 until then, and run the line again after it.
        log.warning("batch line %s: its answer (%d) was not kept: %s", line.request_id, line.status, exc)


def redis_failed(ctx: GatewayContext, exc: Exception, tenant: str, deployment: str) -> GatewayError:
    """The 503 of a Redis that failed the limiter or a batch line's record, counted as a Redis error."""
    ctx.metrics.upstream_errors.inc((tenant, deployment, "redis"))
    message = f"Rate limiting is unavailable ({type(exc).__name__}); retry shortly."
    return service_unavailable(message, "limiter_unavailable", 1.0)
