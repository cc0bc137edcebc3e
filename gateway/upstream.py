"""The hand-written transport: a minimal keep-alive HTTP/1.1 client, asyncio protocols and httptools' parser.

It does only what the gateway's POSTs need, at a third of aiohttp's CPU per request (docs/performance.md): one
write per request, pooled keep-alive connections per host, bodies of any framing (content-length, chunked, or
until close), and streamed bodies handed over chunk by chunk as they arrive (SSE is never buffered; reading
pauses when the reader falls 1 MiB behind). ``close()`` drops the connection, which is what tells a model server
to stop generating. It carries plain ``http://`` only (``supports``); TLS is the library transport's job
(``gateway/upstream_library.py``), behind the same interface (``gateway/transport.py``).

A pinned destination (a tenant-given URL the address policy checked) is connected to at its checked address
only, with no name lookup at all; a published replica's host is looked up at connect.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import time
from collections.abc import AsyncIterator
from typing import cast

import httptools

from controlplane.contracts.protocols import INFERENCE_HEADER_CONTENT_LENGTH
from gateway.transport import (
    JSON_POST,
    Destination,
    RequestHead,
    UpstreamConnectError,
    UpstreamReset,
    UpstreamTransport,
)

INFERENCE_HEADER = INFERENCE_HEADER_CONTENT_LENGTH.encode()

IDLE_S = 4.0  # uvicorn closes idle keep-alive connections after 5 s: do not reuse one that may be closing
MAX_IDLE_PER_HOST = 256
HIGH_WATER = 1 << 20  # unread body bytes at which reading pauses


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_buffered",
        "_chunks",
        "_paused",
        "_waiter",
        "complete",
        "content_type",
        "error",
        "framed",
        "headers_done",
        "idle_since",
        "inference_header",
        "keep_alive",
        "key",
        "parser",
        "status",
        "transport",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.key: tuple[str, int] = ("", 0)  # (host, port) of its pool
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.content_type = ""
        self.inference_header = ""
        self.headers_done = False
        self.framed = False  # content-length or transfer-encoding seen: the body has a known end
        self.complete = False
        self.keep_alive = False
        self.error: BaseException | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None

    # --- asyncio.Protocol -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = UpstreamReset(f"bad HTTP response: {exc}")
            self._wake()
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.complete:
            if self.headers_done and not self.framed:
                self.complete = True  # a body without content-length or chunking ends with the connection
            elif self.error is None:
                self.error = UpstreamReset(f"the upstream closed the connection: {exc!r}")
        self._wake()

    # --- httptools callbacks ----------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-type":
            self.content_type = value.split(b";", 1)[0].strip().lower().decode("latin-1")
        elif name in (b"content-length", b"transfer-encoding"):
            self.framed = True
        elif name == INFERENCE_HEADER:
            self.inference_header = value.strip().decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered >= HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # --- for the response -------------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        """Until the parser made progress (headers, a chunk, the end) or the connection ended."""
        if self.error is not None:
            raise self.error
        if self.transport is None:
            raise UpstreamReset("the upstream connection is closed")
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        await waiter

    def take(self) -> bytes:
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data


class UpstreamResponse:
    """Status and content type once headers arrived; then ``read()`` or ``iter_any()``, then release or close."""

    __slots__ = ("_conn", "_pool", "_released", "content_type", "inference_header", "status")

    def __init__(self, pool: UpstreamPool, conn: _Connection) -> None:
        self._pool = pool
        self._conn = conn
        self._released = False
        self.status = conn.status
        self.content_type = conn.content_type
        self.inference_header = conn.inference_header

    async def read(self) -> bytes:
        conn = self._conn
        parts: list[bytes] = []
        while True:
            if conn._chunks:
                parts.append(conn.take())
            if conn.complete:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            await conn.wait()

    async def iter_any(self) -> AsyncIterator[bytes]:
        """Each piece of body as it arrives (one or more network reads' worth)."""
        conn = self._conn
        while True:
            if conn._chunks:
                yield conn.take()
                continue
            if conn.complete:
                return
            await conn.wait()

    def release(self) -> None:
        """Hand the connection back when the response was read to its end and may be kept; else close it."""
        if self._released:
            return
        self._released = True
        conn = self._conn
        if conn.complete and conn.keep_alive and conn.transport is not None and not conn._chunks:
            self._pool._put(conn)
        else:
            self._abort(conn)

    def close(self) -> None:
        if self._released:
            return
        self._released = True
        self._abort(self._conn)

    @staticmethod
    def _abort(conn: _Connection) -> None:
        if conn.transport is not None:
            conn.transport.abort()


class UpstreamPool(UpstreamTransport):
    """Keep-alive connections per (host, port); one per request in flight, idle ones reused newest first."""

    def __init__(self, max_idle_per_host: int = MAX_IDLE_PER_HOST) -> None:
        self.max_idle_per_host = max_idle_per_host
        self._idle: dict[tuple[str, int], collections.deque[_Connection]] = {}

    def supports(self, destination: Destination) -> bool:
        return destination.scheme == "http"

    async def send(
        self,
        destination: Destination,
        path: str,
        body: bytes,
        request_id: str,
        connect_timeout_s: float,
        bearer: str = "",
        head: RequestHead = JSON_POST,
    ) -> UpstreamResponse:
        """POST ``body`` (JSON) to ``path`` at ``destination``; returns once the response headers arrived."""
        if destination.scheme != "http":
            raise UpstreamConnectError(ValueError(f"this client speaks http only, not {destination.scheme}"))
        host, port = destination.connect_host, destination.port
        extra = b"authorization: Bearer %s\r\n" % bearer.encode("ascii") if bearer else b""
        if head.inference_header:
            extra += b"inference-header-content-length: %s\r\n" % head.inference_header.encode("ascii")
        start = (
            b"%s %s HTTP/1.1\r\nhost: %s\r\ncontent-type: %s\r\nx-request-id: %s\r\n%s"
            b"content-length: %d\r\n\r\n"
            % (
                head.method.encode("ascii"),
                path.encode(),
                destination.authority_bytes,
                head.content_type.encode("ascii"),
                request_id.encode(),
                extra,
                len(body),
            )
        )
        data = start + body
        while True:
            conn, reused = self._get(host, port), True
            if conn is None:
                flags = socket.AI_NUMERICHOST if destination.pinned else 0
                conn, reused = await self._open(host, port, connect_timeout_s, flags), False
                conn.key = (host, port)
            assert conn.transport is not None
            conn.transport.write(data)
            try:
                while not conn.headers_done:
                    await conn.wait()
            except UpstreamReset:
                if reused and not conn.headers_done and not conn._chunks:
                    continue  # a kept-alive connection the server had just closed: try a fresh one (nothing ran)
                raise
            except BaseException:
                if conn.transport is not None:
                    conn.transport.abort()
                raise
            return UpstreamResponse(self, conn)

    def _get(self, host: str, port: int) -> _Connection | None:
        idle = self._idle.get((host, port))
        if not idle:
            return None
        oldest_ok = time.monotonic() - IDLE_S
        while idle:
            conn = idle.pop()
            if conn.transport is not None and not conn.transport.is_closing() and conn.idle_since >= oldest_ok:
                conn._reset()
                return conn
            if conn.transport is not None:
                conn.transport.abort()
        return None

    async def _open(self, host: str, port: int, timeout_s: float, flags: int = 0) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                _, conn = await loop.create_connection(_Connection, host, port, flags=flags)
        except (OSError, TimeoutError) as exc:
            raise UpstreamConnectError(exc) from None
        return conn

    def _put(self, conn: _Connection) -> None:
        transport = conn.transport
        if transport is None:
            return
        idle = self._idle.setdefault(conn.key, collections.deque())
        if len(idle) >= self.max_idle_per_host:
            transport.abort()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                if conn.transport is not None:
                    conn.transport.abort()
        self._idle.clear()
