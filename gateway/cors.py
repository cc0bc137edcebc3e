"""Cross-origin answers (CORS), so that a page of an allowed origin (the console's playground) can call the gateway
from a browser with a key its user pastes.

Only the origins of ``GatewayConfig.cors_origins`` are answered. A preflight from one of them (``OPTIONS`` with
``Origin`` and ``Access-Control-Request-Method``) gets 204 with what the page may send; the actual answers to it
carry ``Access-Control-Allow-Origin`` naming that origin, ``Vary: Origin`` and the headers its script may read. Any
other origin gets no CORS header (its preflight: 403 in the route's error shape), so its browser withholds the
answer. No credentials are allowed: the key travels in ``Authorization``, set by the script, so nothing needs
cookies, and no answer says ``*``.

A preflight is answered before auth and before the snapshot check: browsers send it without the key.
"""

from __future__ import annotations

from gateway.asgi import Message, Scope, Send
from gateway.context import GatewayContext
from gateway.errors import GatewayError, permission_denied
from gateway.refusals import request_id

ALLOW_HEADERS = b"authorization, content-type, x-request-id"
# What a page's script may read of an answer, besides the headers every answer shows (content-type, ...).
EXPOSE_HEADERS = (
    b"x-request-id, retry-after, x-ratelimit-limit-requests, x-ratelimit-remaining-requests, "
    b"x-ratelimit-reset-requests, x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens"
)
# Ten minutes of cached preflights: a narrowed origin list takes effect soon in every open page.
MAX_AGE_S = b"600"


def _origin(scope: Scope) -> bytes | None:
    found = None
    for name, value in scope["headers"]:
        if name == b"origin":
            found = value
    return found


def allowed_origin(origins: frozenset[str], scope: Scope) -> bytes | None:
    """The request's ``Origin`` when it is one of ``origins``, else None (no Origin: not a browser's CORS request)."""
    if not origins:
        return None
    origin = _origin(scope)
    if origin is None or origin.decode("latin-1") not in origins:
        return None
    return origin


def is_preflight(scope: Scope) -> bool:
    """An ``OPTIONS`` request that asks the CORS question; a bare ``OPTIONS`` is an ordinary request."""
    if scope["method"] != "OPTIONS":
        return False
    return any(name == b"access-control-request-method" for name, _ in scope["headers"])


def origin_not_allowed() -> GatewayError:
    return permission_denied("Cross-origin requests from this origin are not allowed.", "origin_not_allowed")


async def serve_preflight(
    ctx: GatewayContext, scope: Scope, send: Send, started: float, methods: bytes, protocol: str
) -> None:
    """Answer a preflight of a route that answers ``methods``: 204 for an allowed origin, else 403."""
    rid = request_id(scope)
    path: str = scope["path"]
    origin = allowed_origin(ctx.config.cors_origins, scope)
    if origin is None:
        await ctx.replies.error(send, rid, "OPTIONS", path, started, origin_not_allowed(), protocol=protocol)
        return
    headers = [
        (b"x-request-id", rid.encode()),
        (b"access-control-allow-origin", origin),
        (b"access-control-allow-methods", methods),
        (b"access-control-allow-headers", ALLOW_HEADERS),
        (b"access-control-max-age", MAX_AGE_S),
        (b"vary", b"origin"),
    ]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
    ctx.replies.finished(rid, "OPTIONS", path, "", "", 204, started)


def with_cors(origins: frozenset[str], scope: Scope, send: Send) -> Send:
    """``send``, adding the CORS headers of an actual answer when the request comes from an allowed origin."""
    origin = allowed_origin(origins, scope)
    if origin is None:
        return send
    extra = [
        (b"access-control-allow-origin", origin),
        (b"access-control-expose-headers", EXPOSE_HEADERS),
        (b"vary", b"origin"),
    ]

    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            # A new list: a relay may pass a header list it keeps.
            message = {**message, "headers": [*message.get("headers", ()), *extra]}
        await send(message)

    return send_with_cors
