"""Usage events (gateway -> control plane): the fields of one ``XADD <prefix>:usage`` entry per finished request.

The gateway writes them with ``encode_event`` (``gateway.usage``), the rollup reads them by the names below
(``quotas.rollup``); the stream's name is ``redis_names.usage_stream_key``. docs/contracts.md ("Usage events") says
what each field means. Values travel as Redis stores them: numbers as their decimal text, an absent revision or
time to first token as the empty string. Django-free.
"""

from __future__ import annotations

RID = "rid"  # request id; the rollup dedups on it
TS = "ts"  # epoch seconds (float) when the request finished
TENANT = "tenant"  # tenant id
KEY = "key"  # ApiKey id
DEPLOYMENT = "deployment"  # deployment id
REVISION = "revision"  # revision id, or empty when none was picked
STATUS = "status"  # HTTP status the client got (499: it went away)
PROMPT_TOKENS = "prompt_tokens"
COMPLETION_TOKENS = "completion_tokens"
LATENCY_MS = "latency_ms"  # total time in the gateway
TTFT_MS = "ttft_ms"  # time to the first upstream byte (streams), or empty
BATCH = "batch"  # the batch a line belongs to (its public id), or empty for interactive traffic
INFERENCES = "inferences"  # Open Inference Protocol requests: the inferences asked (the batch dimension); absent 0
IMAGES = "images"  # image generation: the images answered; absent 0

FIELDS = (
    RID,
    TS,
    TENANT,
    KEY,
    DEPLOYMENT,
    REVISION,
    STATUS,
    PROMPT_TOKENS,
    COMPLETION_TOKENS,
    LATENCY_MS,
    TTFT_MS,
    BATCH,
    INFERENCES,
    IMAGES,
)

Value = str | int | float


def encode_event(
    *,
    request_id: str,
    ts: float,
    tenant_id: int,
    key_id: int,
    deployment_id: int,
    revision_id: int | None,
    status: int,
    prompt_tokens: int,
    completion_tokens: int,
    latency_ms: float,
    ttft_ms: float | None,
    batch_id: str = "",
    inferences: int = 0,
    images: int = 0,
) -> tuple[Value, ...]:
    """The event as XADD arguments, ``name, value, name, value, ...``, in the order of ``FIELDS``."""
    return (
        RID,
        request_id,
        TS,
        ts,
        TENANT,
        tenant_id,
        KEY,
        key_id,
        DEPLOYMENT,
        deployment_id,
        REVISION,
        "" if revision_id is None else revision_id,
        STATUS,
        status,
        PROMPT_TOKENS,
        prompt_tokens,
        COMPLETION_TOKENS,
        completion_tokens,
        LATENCY_MS,
        round(latency_ms, 3),
        TTFT_MS,
        "" if ttft_ms is None else round(ttft_ms, 3),
        BATCH,
        batch_id,
        INFERENCES,
        inferences,
        IMAGES,
        images,
    )


def as_mapping(flat: tuple[Value, ...]) -> dict[str, Value]:
    """``encode_event``'s arguments as the field mapping redis-py's ``xadd`` takes."""
    return {str(name): value for name, value in zip(flat[::2], flat[1::2], strict=True)}
