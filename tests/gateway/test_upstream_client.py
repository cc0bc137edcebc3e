"""The gateway's HTTP/1.1 upstream client against small raw HTTP servers: keep-alive, framing, streaming, errors.

Each server here is a few lines of asyncio that answer with exact bytes, so the client meets the framings and
failures a model server can produce (the full gateway tests run it against the real model server).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from gateway.upstream import UpstreamConnectError, UpstreamPool, UpstreamReset

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


async def serve(handler: Handler) -> tuple[asyncio.Server, str, list[int]]:
    """A server on a free port; the list counts the connections it accepted."""
    connections: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}", connections


def test_it_keeps_connections_alive_and_sends_the_request_as_given() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await read_request(reader))
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
            await writer.drain()

    async def scenario() -> tuple[list[tuple[int, str, bytes]], int]:
        server, url, connections = await serve(handler)
        pool = UpstreamPool()
        results = []
        for index in range(3):
            response = await pool.post(url, "/v1/chat/completions", b'{"a":1}', f"rid-{index}", 2.0)
            results.append((response.status, response.content_type, await response.read()))
            response.release()
        pool.close()
        server.close()
        return results, len(connections)

    results, connections = asyncio.run(scenario())
    assert results == [(200, "application/json", b"{}")] * 3
    assert connections == 1
    assert seen[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nx-request-id: rid-0\r\n" in seen[0] and seen[0].endswith(b'\r\n\r\n{"a":1}')


def test_it_replaces_a_kept_connection_that_the_server_closed() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        # then close without saying so, as a server whose keep-alive timeout passed

    async def scenario() -> tuple[list[bytes], int]:
        server, url, connections = await serve(handler)
        pool = UpstreamPool()
        bodies = []
        for _ in range(2):
            response = await pool.post(url, "/x", b"{}", "rid", 2.0)
            bodies.append(await response.read())
            response.release()
            await asyncio.sleep(0.05)
        pool.close()
        server.close()
        return bodies, len(connections)

    assert asyncio.run(scenario()) == ([b"ok", b"ok"], 2)


def test_it_hands_over_chunks_of_a_stream_as_they_arrive() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n")
        writer.write(b"transfer-encoding: chunked\r\n\r\n7\r\ndata: 1\r\n")
        await writer.drain()
        await release.wait()  # the second chunk only after the client saw the first
        writer.write(b"7\r\ndata: 2\r\n0\r\n\r\n")
        await writer.drain()

    async def scenario() -> tuple[str, list[bytes]]:
        server, url, _ = await serve(handler)
        pool = UpstreamPool()
        response = await pool.post(url, "/s", b"{}", "rid", 2.0)
        pieces = []
        async for piece in response.iter_any():
            pieces.append(piece)
            release.set()
        response.release()
        pool.close()
        server.close()
        return response.content_type, pieces

    content_type, pieces = asyncio.run(scenario())
    assert content_type == "text/event-stream"
    assert pieces == [b"data: 1", b"data: 2"]


def test_it_reads_a_body_that_ends_with_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")
        await writer.drain()

    async def scenario() -> bytes:
        server, url, _ = await serve(handler)
        pool = UpstreamPool()
        response = await pool.post(url, "/c", b"{}", "rid", 2.0)
        body = await response.read()
        response.release()
        server.close()
        return body

    assert asyncio.run(scenario()) == b"until the end"


def test_it_raises_a_reset_when_the_body_is_cut_short() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        await writer.drain()

    async def scenario() -> None:
        server, url, _ = await serve(handler)
        pool = UpstreamPool()
        response = await pool.post(url, "/r", b"{}", "rid", 2.0)
        try:
            await response.read()
        finally:
            response.close()
            server.close()

    with pytest.raises(UpstreamReset):
        asyncio.run(scenario())


def test_it_raises_a_connect_error_when_nothing_listens() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: refused

        async def scenario() -> None:
            await UpstreamPool().post(f"http://127.0.0.1:{port}", "/", b"{}", "rid", 1.0)

        with pytest.raises(UpstreamConnectError):
            asyncio.run(scenario())
