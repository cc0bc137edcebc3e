"""The Batch API's wire between the gateway and the control plane, both ways (docs/batch.md, docs/contracts.md).

Two conversations cross it, each authenticated by the platform's internal token (``FRONTDOOR_INTERNAL_TOKEN``, the
same value on both sides; ``internal_token_from_env``):

- **gateway -> control plane.** The gateway authenticates ``/v1/files`` and ``/v1/batches`` with the caller's
  inference key and forwards them, bodies streamed both ways, to ``INTERNAL_PREFIX`` + the same path on the control
  plane, naming the tenant (``TENANT_HEADER``, its slug) and the key (``KEY_HEADER``, its public id) it resolved.
  The control plane trusts those two headers only beside a valid ``TOKEN_HEADER``.
- **batch worker -> gateway.** A Celery worker sends each batch line to the gateway's own inference route with
  ``TOKEN_HEADER``, ``ON_BEHALF_HEADER`` (the public id of the key that created the batch: keys are stored only as
  hashes, so the worker cannot present one), ``BATCH_HEADER`` (the batch id, which tags the usage event) and the
  line's request id in ``x-request-id``. The gateway applies that key's snapshot entry as if the key itself had
  called: a revoked key, an expired one or a suspended tenant stop the batch.

A line keeps one request id across re-runs. The gateway answers it at most once: ``batch_line_key`` holds
``PENDING`` while a try is in flight and then the answer (``encode_answer``), which a re-run gets back with
``REPLAYED_HEADER`` set, neither reserved against the limits nor metered again.

Django-free.
"""

from __future__ import annotations

import hmac
import re

from controlplane.contracts.env import ImproperlyConfiguredEnv, env_str

INTERNAL_PREFIX = "/internal/openai"  # the control plane's side of the files and batches routes
TOKEN_HEADER = "x-frontdoor-internal-token"  # noqa: S105 - the header's name, not a token
TENANT_HEADER = "x-frontdoor-tenant"
KEY_HEADER = "x-frontdoor-key"
ON_BEHALF_HEADER = "x-frontdoor-on-behalf-of"
BATCH_HEADER = "x-frontdoor-batch"
REPLAYED_HEADER = "x-frontdoor-replayed"

# The routes a batch line may name, as its ``url`` and the batch's ``endpoint``.
BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")

PENDING = b"pending"
MAX_REQUEST_ID = 64  # the usage rollup's request id column; line ids are far shorter

# Ids the wire carries as they are, in a path, a header or a Redis key name: file, batch, line and key ids.
_PLAIN_ID = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_REQUEST_ID}}}")

DEV_INTERNAL_TOKEN = "dev-insecure-internal-token-0123456789abcdef"  # noqa: S105 - the development default
MIN_TOKEN_LENGTH = 32


def internal_token_from_env() -> str:
    """``FRONTDOOR_INTERNAL_TOKEN`` (or ``_FILE``): required, 32+ characters, in production; a shared default else."""
    production = env_str("FRONTDOOR_ENV", "development") == "production"
    token = env_str("FRONTDOOR_INTERNAL_TOKEN", "" if production else DEV_INTERNAL_TOKEN)
    if production and (len(token) < MIN_TOKEN_LENGTH or token == DEV_INTERNAL_TOKEN):
        raise ImproperlyConfiguredEnv(
            f"FRONTDOOR_INTERNAL_TOKEN (or _FILE) of {MIN_TOKEN_LENGTH}+ characters is required in production"
        )
    return token


def token_matches(presented: str | bytes | None, expected: str) -> bool:
    """Whether ``presented`` is the internal token, in constant time; an empty expected token matches nothing."""
    if not presented or not expected:
        return False
    raw = presented if isinstance(presented, bytes) else presented.encode("utf-8", "replace")
    return hmac.compare_digest(raw, expected.encode())


def is_plain_id(value: str) -> bool:
    """Whether ``value`` is 1 to ``MAX_REQUEST_ID`` characters of ``[A-Za-z0-9_-]``: nothing to escape anywhere."""
    return _PLAIN_ID.fullmatch(value) is not None


def encode_answer(status: int, body: bytes) -> bytes:
    """A line's stored answer: ``"<status> "`` then the body the gateway sent."""
    return b"%d %s" % (status, body)


def decode_answer(raw: bytes) -> tuple[int, bytes] | None:
    """``encode_answer``'s (status, body), or None for ``PENDING`` or anything that is not an answer."""
    head, _, body = raw.partition(b" ")
    if not head.isdigit() or raw == PENDING:
        return None
    return int(head), body
