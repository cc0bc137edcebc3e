"""Talking to replicas: one attempt with retry on refused connections, and relaying a stream chunk by chunk.

Upstream failures map to OpenAI-shaped 502 (bad response / reset), 503 (no replica) and 504 (timeout). Replicas the
platform publishes go straight to the transport of their endpoint (``Transports.for_replica``: the hand-written
client for plain http); tenant-given endpoints go through ``ExternalUpstream`` (the address policy, then a
connection to the checked address), so the hot path pays for no check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.context import GatewayContext
from gateway.errors import UpstreamFailure, bad_gateway, gateway_timeout, service_unavailable
from gateway.external import EndpointRefused
from gateway.outcome import LEASE_MARGIN_S, UPSTREAM_PATHS, Admitted
from gateway.routing import NoReplica
from gateway.snapshot_index import DeploymentEntry, RevisionEntry
from gateway.transport import JSON_POST, RequestHead, UpstreamAnswer, UpstreamConnectError


@dataclass(slots=True)
class Attempt:
    revision: RevisionEntry
    endpoint: str
    response: UpstreamAnswer


async def open_upstream(
    ctx: GatewayContext,
    call: Admitted,
    deployment: DeploymentEntry,
    body_for: Callable[[RevisionEntry], bytes],
    path_for: Callable[[RevisionEntry], str] | None = None,
    head: RequestHead = JSON_POST,
) -> Attempt:
    """POST to a replica of ``deployment`` and return once response headers arrived.

    ``body_for(revision)`` gives the body for the revision picked (its upstream model id may differ), ``path_for``
    its path when that names the model (the Open Inference Protocol's), and ``head`` the method and headers. A refused
    connection ejects the replica and retries on another one (``FRONTDOOR_GATEWAY_RETRIES``): nothing reached the
    model, so the retry cannot duplicate work (an endpoint the address policy refused is treated alike: nothing
    was even connected). Any other failure is final. The first revision picked starts the request's in-flight
    lease in the load figures; each refused connection ("connect") or endpoint ("refused") is counted.
    """
    cfg = ctx.config
    balancer = ctx.balancer
    outcome = call.outcome
    default_path = UPSTREAM_PATHS.get(call.parsed.kind, "")
    first_byte_timeout_s = min(cfg.first_byte_timeout_s, call.timeout_s)
    excluded: set[str] = set()
    last_error = "no replica"
    for _ in range(cfg.retries + 1):
        try:
            revision, endpoint = balancer.pick(deployment, frozenset(excluded))
        except NoReplica as exc:
            raise UpstreamFailure(
                service_unavailable(
                    f"No replica of '{deployment.name}' is reachable ({last_error}).",
                    "no_replica_available",
                    exc.retry_after_s,
                ),
                "no_replica",
            ) from None
        if outcome.revision is None:
            ctx.load.started(call.usage_id, deployment.id, revision.id, call.timeout_s + LEASE_MARGIN_S)
        outcome.revision = revision
        path = default_path if path_for is None else path_for(revision)
        balancer.acquire(endpoint)
        try:
            async with asyncio.timeout(first_byte_timeout_s):
                if revision.tenant_given:
                    # The deployment's upstream key, if it has one; the client's own Authorization stays here.
                    response = await ctx.external.post(
                        endpoint,
                        path,
                        body_for(revision),
                        call.rid,
                        cfg.connect_timeout_s,
                        deployment.upstream_key,
                        head,
                    )
                else:
                    transport, destination = ctx.transports.for_replica(endpoint)
                    response = await transport.send(
                        destination, path, body_for(revision), call.rid, cfg.connect_timeout_s, "", head
                    )
            return Attempt(revision, endpoint, response)
        except UpstreamConnectError as exc:
            balancer.release(endpoint)
            refused = isinstance(exc, EndpointRefused)
            if not refused:  # a refusal is cached per snapshot: ejecting would outlive a snapshot that allows it
                balancer.eject(endpoint)
            excluded.add(endpoint)
            kind = "refused" if refused else "connect"
            ctx.metrics.upstream_errors.inc((deployment.tenant, deployment.name, kind))
            last_error = f"connection refused: {exc.os_error}"
        except TimeoutError:
            balancer.release(endpoint)
            raise UpstreamFailure(gateway_timeout(f"'{deployment.name}' did not answer in time."), "timeout") from None
        except OSError as exc:
            balancer.release(endpoint)
            raise UpstreamFailure(bad_gateway(f"The model server failed: {type(exc).__name__}."), "reset") from None
        except BaseException:
            balancer.release(endpoint)
            raise
    raise UpstreamFailure(
        service_unavailable(
            f"No replica of '{deployment.name}' is reachable ({last_error}).", "no_replica_available", 1.0
        ),
        "connect",
    )


def connection_failed(exc: OSError) -> UpstreamFailure:
    """What a relay raises when the replica's connection broke while its answer was read (``UpstreamReset``)."""
    return UpstreamFailure(bad_gateway(f"The model server connection failed: {type(exc).__name__}."), "reset")


def end_attempt(ctx: GatewayContext, attempt: Attempt, clean: bool) -> None:
    """Hand the attempt's connection back after a clean end, else close it (what tells a model server to stop
    generating: a disconnect, a timeout, an error), and give its replica's slot back to the balancer."""
    if clean:
        attempt.response.release()
    else:
        attempt.response.close()
    ctx.balancer.release(attempt.endpoint)


def rewrite_model(data: bytes, patterns: tuple[tuple[bytes, bytes], ...]) -> bytes:
    for upstream, mine in patterns:
        if upstream in data:
            return data.replace(upstream, mine)
    return data


class StreamRelay:
    """Splits an upstream SSE byte stream into events, rewrites and filters them, and meters tokens.

    Complete events are forwarded as soon as they arrive; only a trailing partial event waits for its end.
    """

    __slots__ = ("_buffer", "completion_tokens", "done", "hide_usage", "patterns", "usage")

    def __init__(self, patterns: tuple[tuple[bytes, bytes], ...], hide_usage: bool) -> None:
        self.patterns = patterns
        self.hide_usage = hide_usage
        self._buffer = b""
        self.completion_tokens = 0  # content-bearing chunks relayed: the fallback count for aborted streams
        self.usage: dict[str, Any] | None = None
        self.done = False

    def feed(self, data: bytes) -> bytes:
        buffer = self._buffer + data if self._buffer else data
        end = buffer.rfind(b"\n\n")
        if end < 0:
            self._buffer = buffer
            return b""
        self._buffer = buffer[end + 2 :]
        out: list[bytes] = []
        for event in buffer[:end].split(b"\n\n"):
            forwarded = self._event(event)
            if forwarded is not None:
                out.append(forwarded)
                out.append(b"\n\n")
        return b"".join(out)

    def finish(self) -> bytes:
        """At a clean end of the body: the last event, when the upstream did not end it with a blank line."""
        event, self._buffer = self._buffer.strip(b"\r\n"), b""
        if not event:
            return b""
        forwarded = self._event(event)
        return forwarded + b"\n\n" if forwarded is not None else b""

    def _event(self, event: bytes) -> bytes | None:
        if not event.startswith(b"data:"):
            return event or None  # comments / other fields pass through untouched
        payload = event[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            return event
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return event
        if not isinstance(chunk, dict):
            return event
        choices = chunk.get("choices") or ()
        for choice in choices:
            if isinstance(choice, dict) and _has_content(choice):
                self.completion_tokens += 1
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
            if self.hide_usage and not choices:
                return None  # the usage chunk the client did not ask for
        if self.hide_usage:
            event = event.replace(b',"usage":null', b"").replace(b', "usage": null', b"")
        return rewrite_model(event, self.patterns)


def _has_content(choice: dict[str, Any]) -> bool:
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return bool(delta.get("content"))
    return bool(choice.get("text"))
