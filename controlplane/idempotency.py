"""``Idempotency-Key`` for POSTs: the same key and body return the first result and create nothing twice.

How it stays correct under concurrency: the whole POST runs in one transaction that *first* inserts the
``IdempotencyRecord`` (principal, key). A concurrent duplicate's INSERT blocks on the unique index until the
first transaction ends: if it committed, the duplicate gets an IntegrityError, reads the stored response and
replays it; if it rolled back, the duplicate's insert succeeds and it executes instead. Only successful (2xx)
responses are stored; an error rolls the record back with everything else, so the client may retry.

The same key with a different body or path is a client error (422) — it would otherwise silently replay a
response to a different request. Use ``IdempotentMixin`` on any DRF view (left of the base class).

Secrets are never stored: a view lists the response fields that carry one in ``idempotency_redacted_fields``
(API-key creation: ``key``); a replay answers with those fields set to null.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponseBase
from rest_framework import exceptions, status
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from tenants.models import ApiKey, IdempotencyRecord

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


class IdempotencyKeyReused(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "idempotency_key_reused"
    default_detail = "this Idempotency-Key was already used for a different request; use a new key"


class _Replay(Exception):
    """Raised from ``initial()`` to answer with a stored response instead of running the handler."""

    def __init__(self, record: IdempotencyRecord) -> None:
        super().__init__(record.key)
        self.record = record


def idempotency_principal(request: Request) -> str | None:
    """Whose key space the Idempotency-Key lives in: ``key:<key_id>`` or ``user:<id>``; None when anonymous."""
    if isinstance(request.auth, ApiKey):
        return f"key:{request.auth.key_id}"
    user = request.user
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return None


def body_digest(body: bytes) -> str:
    """SHA-256 of the body; JSON bodies are canonicalised first so key order and spacing do not matter."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, UnicodeDecodeError):
        canonical = body
    return IdempotencyRecord.body_digest(canonical)


def _jsonable(data: Any) -> Any:
    """The response data as plain JSON (what the client saw), for storing in a JSONField."""
    return json.loads(JSONRenderer().render(data)) if data is not None else None


class IdempotentMixin:
    """Makes POSTs carrying ``Idempotency-Key`` run at most once per (principal, key)."""

    # Top-level response fields never written to the record (they would put a secret at rest).
    idempotency_redacted_fields: ClassVar[frozenset[str]] = frozenset()
    _idempotency_record: IdempotencyRecord | None = None
    _idempotency_digest: str = ""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        key = request.headers.get(HEADER, "")
        if request.method != "POST" or not key:
            return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]
        # Read the raw body before DRF consumes the stream (Django caches it for DRF's parsers).
        self._idempotency_digest = body_digest(request.body)
        with transaction.atomic():
            response: HttpResponseBase = super().dispatch(request, *args, **kwargs)  # type: ignore[misc]
            record = self._idempotency_record
            if record is not None:
                if 200 <= response.status_code < 300:
                    record.status_code = response.status_code
                    record.response_body = self._storable(getattr(response, "data", None))
                    record.save(update_fields=["status_code", "response_body"])
                else:
                    # Failed requests leave nothing behind, the record included: a retry runs afresh.
                    transaction.set_rollback(True)
        return response

    def _storable(self, data: Any) -> Any:
        body = _jsonable(data)
        if isinstance(body, dict):
            body = {k: (None if k in self.idempotency_redacted_fields else v) for k, v in body.items()}
        return body

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]  # authentication and permissions first
        key = request.headers.get(HEADER, "")
        if request.method != "POST" or not key:
            return
        if len(key) > MAX_KEY_LENGTH:
            raise exceptions.ValidationError({HEADER: [f"must be at most {MAX_KEY_LENGTH} characters"]})
        principal = idempotency_principal(request)
        if principal is None:
            raise exceptions.NotAuthenticated()
        try:
            with transaction.atomic():  # savepoint: the duplicate's IntegrityError must not poison the request
                self._idempotency_record = IdempotencyRecord.objects.create(
                    principal=principal,
                    key=key,
                    method="POST",
                    path=request.path[:500],
                    body_sha256=self._idempotency_digest,
                )
        except IntegrityError:
            existing = IdempotencyRecord.objects.get(principal=principal, key=key)
            if existing.path != request.path[:500] or existing.body_sha256 != self._idempotency_digest:
                raise IdempotencyKeyReused(
                    f"Idempotency-Key {key!r} was already used with a different request body or path; "
                    "use a new key for a new request"
                ) from None
            raise _Replay(existing) from None

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, _Replay):
            record = exc.record
            response = Response(record.response_body, status=record.status_code or status.HTTP_200_OK)
            response["Idempotent-Replayed"] = "true"
            return response
        return super().handle_exception(exc)  # type: ignore[misc, no-any-return]
