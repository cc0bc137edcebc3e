"""The gateway's errors, rendered in the shape of the protocol the client speaks.

OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with string codes; ``param`` names the offending
field for ``invalid_request_error`` about a field, and is null otherwise. The Open Inference Protocol's (v2):
``{"error": "<message>"}``, with the same statuses and headers. One ``GatewayError`` serves both (``render``).
"""

from __future__ import annotations

import orjson

from controlplane.contracts.protocols import V2


class GatewayError(Exception):
    """An error answered to the client as-is; raised anywhere on the request path."""

    __slots__ = ("code", "error_type", "headers", "message", "param", "status")

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str,
        code: str | None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> bytes:
        return error_body(self.message, self.error_type, self.param, self.code)

    def render(self, protocol: str) -> bytes:
        """The body in ``protocol``'s shape (``controlplane.contracts.protocols``)."""
        return orjson.dumps({"error": self.message}) if protocol == V2 else self.body()


class UpstreamFailure(GatewayError):
    """A GatewayError that also names the metrics kind (connect, refused, timeout, status, reset, no_replica)."""

    def __init__(self, error: GatewayError, kind: str) -> None:
        super().__init__(error.status, error.message, error.error_type, error.code, error.param, error.headers)
        self.kind = kind


def error_body(message: str, error_type: str, param: str | None, code: str | None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": error_type, "param": param, "code": code}})


def invalid_request(message: str, param: str | None = None, code: str | None = None, status: int = 400) -> GatewayError:
    return GatewayError(status, message, "invalid_request_error", code, param)


def invalid_api_key(message: str) -> GatewayError:
    return GatewayError(401, message, "invalid_request_error", "invalid_api_key")


def permission_denied(message: str, code: str) -> GatewayError:
    return GatewayError(403, message, "permission_error", code)


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    )


def body_too_large(limit: int) -> GatewayError:
    return GatewayError(
        413, f"Request body exceeds the limit of {limit} bytes.", "invalid_request_error", "request_too_large"
    )


def service_unavailable(message: str, code: str, retry_after_s: float | None = None) -> GatewayError:
    headers = {"retry-after": str(max(1, round(retry_after_s)))} if retry_after_s is not None else {}
    return GatewayError(503, message, "service_unavailable_error", code, headers=headers)


def bad_gateway(message: str, code: str = "upstream_error") -> GatewayError:
    return GatewayError(502, message, "upstream_error", code)


def gateway_timeout(message: str) -> GatewayError:
    return GatewayError(504, message, "timeout_error", "upstream_timeout")


def upstream_unavailable(deployment: str) -> GatewayError:
    """The one answer for every way a tenant-given endpoint fails before a usable response.

    Refused by the address policy, refused or reset connections, timeouts, answers that are not OpenAI's: one
    status, code and message for all, so the gateway tells nobody which addresses and ports are open.
    """
    return GatewayError(
        502, f"The endpoint of '{deployment}' could not be reached.", "upstream_error", "upstream_unavailable"
    )


def stream_error_event(message: str, code: str) -> bytes:
    """The last event of a stream that failed after its 200 went out: OpenAI's error shape as one SSE event.

    No ``[DONE]`` follows, and the ``openai`` client raises ``APIError`` on a chunk that carries ``error``: an
    answer cut short cannot pass for a whole one.
    """
    return b"data: " + error_body(message, "server_error", None, code) + b"\n\n"


def is_openai_error(data: bytes) -> bool:
    """An upstream's body is OpenAI's error shape, ``{"error": {...}}``."""
    try:
        answer = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(answer, dict) and isinstance(answer.get("error"), dict)
