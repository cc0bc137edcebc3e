"""One error shape for the REST API: ``{"error": {"type", "code", "message", "fields"}}``.

``fields`` maps each offending field to its messages, so clients and the console can show them inline.
Database integrity errors (a race the validators could not see) become 409s instead of 500s. The services'
domain errors (``controlplane.domain_errors``) get their status here and nowhere else.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler, set_rollback

from controlplane import domain_errors


def _flatten(detail: Any) -> Any:
    if isinstance(detail, dict):
        return {str(k): _flatten(v) for k, v in detail.items()}
    if isinstance(detail, list):
        flat = [_flatten(item) for item in detail]
        return flat
    return str(detail)


def _summary(fields: dict[str, Any]) -> str:
    parts = []
    for name, messages in fields.items():
        text = messages[0] if isinstance(messages, list) and messages else messages
        if isinstance(text, dict):
            text = "invalid"
        parts.append(f"{name}: {text}" if name != "non_field_errors" else str(text))
    return "; ".join(parts)


def error_body(status_code: int, code: str, message: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "error": {
            "type": "invalid_request" if status_code < 500 else "server_error",
            "code": code,
            "message": message,
            "fields": fields or {},
        }
    }


# Most specific first: a subclass not listed gets its nearest listed base's status.
DOMAIN_STATUS: tuple[tuple[type[domain_errors.DomainError], int], ...] = (
    (domain_errors.Invalid, status.HTTP_400_BAD_REQUEST),
    (domain_errors.NotFound, status.HTTP_404_NOT_FOUND),
    (domain_errors.Forbidden, status.HTTP_403_FORBIDDEN),
    (domain_errors.Conflict, status.HTTP_409_CONFLICT),
    (domain_errors.QuotaExceeded, status.HTTP_422_UNPROCESSABLE_ENTITY),
)


def domain_status(exc: domain_errors.DomainError) -> int:
    """The HTTP status of a domain error (400 for one no entry covers)."""
    return next((code for kind, code in DOMAIN_STATUS if isinstance(exc, kind)), status.HTTP_400_BAD_REQUEST)


def domain_error_body(exc: domain_errors.DomainError) -> dict[str, Any]:
    """The error body of a domain error, the same as the DRF exception it replaced gave."""
    code = domain_status(exc)
    if isinstance(exc, domain_errors.Invalid):
        fields = _flatten(exc.fields)
        return error_body(code, exc.code, _summary(fields) or exc.default_message, fields)
    return error_body(code, exc.code, exc.message)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, domain_errors.DomainError):
        set_rollback()  # as DRF's own handler does for its exceptions: a refused request commits nothing
        return Response(domain_error_body(exc), status=domain_status(exc))
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    if isinstance(exc, RequestDataTooBig):  # a body without a declared length, cut off while being read
        return Response(
            error_body(413, "request_too_large", "the request body is too large"),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, IntegrityError):
        return Response(
            error_body(status.HTTP_409_CONFLICT, "conflict", "the change conflicts with existing data; retry"),
            status=status.HTTP_409_CONFLICT,
        )
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        detail = _flatten(exc.detail)
        fields = detail if isinstance(detail, dict) else {"non_field_errors": detail}
        response.data = error_body(response.status_code, "invalid", _summary(fields) or "invalid input", fields)
    else:
        code = "not_found" if isinstance(exc, Http404) else getattr(exc, "default_code", "error")
        detail = getattr(exc, "detail", str(exc))
        if isinstance(exc, exceptions.APIException) and isinstance(exc.detail, dict | list):
            fields = _flatten(exc.detail) if isinstance(exc.detail, dict) else {}
            message = _summary(fields) if fields else "; ".join(str(d) for d in exc.detail)
            response.data = error_body(response.status_code, str(code), message, fields)
        else:
            if isinstance(exc, exceptions.APIException):
                code = exc.get_codes() if isinstance(exc.get_codes(), str) else code
            response.data = error_body(response.status_code, str(code), str(detail))
    return response
