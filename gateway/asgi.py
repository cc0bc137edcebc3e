"""ASGI types and the one response helper the gateway uses for whole (non-streamed) answers."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_RID_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def request_id_from(raw: bytes | None) -> str:
    """The client's x-request-id when it is short and plain, else a fresh one."""
    if raw and len(raw) <= 128 and all(c in _RID_CHARS for c in raw):
        return raw.decode()
    return "req_" + os.urandom(12).hex()


def encode_headers(headers: dict[str, str] | None) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode()) for k, v in headers.items()] if headers else []


async def respond(
    send: Send,
    status: int,
    body: bytes,
    rid: str,
    headers: dict[str, str] | None = None,
    content_type: bytes = b"application/json",
) -> None:
    raw = [
        (b"content-type", content_type),
        (b"content-length", b"%d" % len(body)),
        (b"x-request-id", rid.encode()),
    ]
    if headers:
        raw.extend([(k.encode(), v.encode()) for k, v in headers.items()])
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
