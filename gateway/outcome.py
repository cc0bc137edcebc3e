"""What an admitted request did (it becomes the usage event), and constants shared by the relays."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.snapshot import RevisionEntry
from gateway.validation import EMBEDDINGS

LEASE_MARGIN_S = 30.0
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
