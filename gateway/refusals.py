"""The refusals every route shares, before anything of the request is read: unknown URL, wrong method, no snapshot.

Until a config snapshot is loaded, every route that authenticates answers 503 ``snapshot_unavailable`` with
``Retry-After`` before auth: without a snapshot the gateway knows no key, and a 401 would tell clients that do not
retry it that their key is bad. The errors are protocol-neutral; each route renders them in its own shape.
"""

from __future__ import annotations

from gateway.asgi import Scope, request_id_from
from gateway.errors import GatewayError, service_unavailable
from gateway.snapshot import SnapshotStore

# How long a client is asked to wait while no snapshot is loaded: the version poll retries every second.
SNAPSHOT_RETRY_AFTER_S = 1.0


def snapshot_unavailable(store: SnapshotStore) -> GatewayError | None:
    """The refusal of every route that authenticates while no snapshot is loaded, else None."""
    if store.loaded:
        return None
    return service_unavailable(
        "The gateway has not loaded its configuration yet; retry shortly.",
        "snapshot_unavailable",
        SNAPSHOT_RETRY_AFTER_S,
    )


def request_id(scope: Scope) -> str:
    """The request's id: the client's ``x-request-id`` when it is a usable one, else a new one."""
    raw = None
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            raw = value  # the last one counts, as in the inference pipeline
    return request_id_from(raw)


def authorization(scope: Scope) -> bytes | None:
    found = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            found = value
    return found


def unknown_url(method: str, path: str) -> GatewayError:
    return GatewayError(404, f"Unknown request URL: {method} {path}.", "invalid_request_error", "unknown_url")


def method_not_allowed(method: str, path: str) -> GatewayError:
    return GatewayError(
        405, f"Method {method} is not allowed on {path}.", "invalid_request_error", "method_not_allowed"
    )
