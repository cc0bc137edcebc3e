"""An admitted request as the relays serve it, what it did (it becomes the usage event), and their constants."""

from __future__ import annotations

import logging
import reprlib
from dataclasses import dataclass

from controlplane.contracts.protocols import OPENAI
from gateway.asgi import Send
from gateway.snapshot_index import RevisionEntry
from gateway.validation import EMBEDDINGS, IMAGES, ParsedRequest

LEASE_MARGIN_S = 30.0
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
UPSTREAM_PATHS = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    EMBEDDINGS: "/v1/embeddings",
    IMAGES: "/v1/images/generations",
}
# No single request uses a billion tokens; a count above it is an upstream lying, and the limiter's Lua scripts
# must only ever see integers they can add exactly.
MAX_USAGE_TOKENS = 10**9
BAD_USAGE = "bad_usage"
# The error code of a stream whose upstream went away before [DONE] (the client already has its 200).
DISCONNECTED = "upstream_disconnected"

log = logging.getLogger("frontdoor.gateway.metering")
# The upstream's usage goes into the log bounded in depth and length: repr() of what an external endpoint sent
# nested a thousand levels deep would raise RecursionError inside logging and print a traceback instead.
_USAGE_REPR = reprlib.Repr()
_USAGE_REPR.maxlevel = 3
_USAGE_REPR.maxstring = _USAGE_REPR.maxother = 120


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
    units: int = 0  # what a success is metered in besides tokens: inferences (v2) or images

    def charge(self, usage: object, reserved_prompt: int, reserved_completion: int, rid: str, deployment: str) -> None:
        """Meter the upstream's ``usage`` object, or the reservation when it cannot be believed.

        An upstream (a tenant's external endpoint above all) may send anything: counts that are not integers,
        negative, absurdly large or booleans must neither fail the request nor the limiter's settle, nor meter
        less than the request was admitted for. Those charge the reservation and are flagged (``bad_usage``).
        """
        counts = usage_counts(usage)
        if counts is not None:
            self.prompt_tokens, self.completion_tokens = counts
            return
        self.prompt_tokens, self.completion_tokens = reserved_prompt, reserved_completion
        if self.upstream_error is None:
            self.upstream_error = BAD_USAGE
        log.warning(
            "request %s: the upstream of %r sent unusable usage %s; charged the reservation (%d tokens)",
            rid,
            deployment,
            _USAGE_REPR.repr(usage),
            reserved_prompt + reserved_completion,
        )


@dataclass(slots=True)
class Admitted:
    """One request the limiter admitted: what it asks, where its answer goes, and what it did (``outcome``).

    Made once per admitted request and handed down the pipeline, so the relays take it and the deployment
    (which a cold start may replace with a newer one) rather than each of its parts.
    """

    parsed: ParsedRequest
    path: str
    send: Send
    rid: str
    usage_id: str  # the id of its lease and usage event (``rid`` made unique when the client chose it)
    rate_headers: dict[str, str]  # the limiter's x-ratelimit-* headers, on every answer
    timeout_s: float
    outcome: Outcome
    protocol: str = OPENAI  # the shape its errors are answered in
    method: str = "POST"


def usage_counts(usage: object) -> tuple[int, int] | None:
    """(prompt, completion) tokens of an OpenAI ``usage`` object; None when it is missing or not believable.

    A count may be absent or null (0); present, it must be a non-negative ``int`` (not a bool, not a float) of at
    most ``MAX_USAGE_TOKENS``.
    """
    if not isinstance(usage, dict):
        return None
    counts = []
    for name in ("prompt_tokens", "completion_tokens"):
        value = usage.get(name)
        if value is None:
            counts.append(0)
        elif type(value) is int and 0 <= value <= MAX_USAGE_TOKENS:
            counts.append(value)
        else:
            return None
    return counts[0], counts[1]
