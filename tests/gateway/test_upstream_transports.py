"""One conformance suite for both upstream transports behind ``send(target, ...)``.

The hand-written client (``UpstreamPool``, http) and the library transport (``LibraryTransport``: https, and http
too) must behave alike for the relays: status and media type once headers arrived, whole and streamed bodies,
pinned connections (the checked address, the URL's host as Host), keep-alive, and the same two errors
(``UpstreamConnectError`` when nothing was sent, ``UpstreamReset`` when a connection broke). Each server here is
a few lines of asyncio answering exact bytes, over TLS with a certificate of a test CA for https.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controlplane.contracts.addresses import AddressPolicy, Target, parse_networks
from gateway.upstream import UpstreamConnectError, UpstreamPool, UpstreamReset
from gateway.upstream_library import LibraryTransport
from tests.gateway.pki import Authority, server_context
from tests.support.gateway import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
LOOPBACK = AddressPolicy(allowed_networks=parse_networks(["127.0.0.0/8"]))


@dataclass
class Flavour:
    """A transport and the scheme it is tested with; ``ca`` is the trusted test CA (https)."""

    name: str
    scheme: str
    ca: Authority | None = None
    folder: Path | None = None

    def transport(self) -> Any:
        if self.name == "hand-written":
            return UpstreamPool()
        return LibraryTransport(ca_bundle=str(self.ca.pem) if self.ca else "")

    def tls(self) -> ssl.SSLContext | None:
        if self.scheme != "https":
            return None
        assert self.ca is not None and self.folder is not None
        return server_context(*self.ca.issue(self.folder, "transport"))


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Path]:
    folder = tmp_path_factory.mktemp("transport-pki")
    return Authority.create(folder, "transport-test-ca"), folder


@pytest.fixture(params=["hand-written http", "library https", "library http"])
def flavour(request: pytest.FixtureRequest, ca: tuple[Authority, Path]) -> Flavour:
    name, scheme = str(request.param).split()
    return Flavour(name, scheme, *ca)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


@asynccontextmanager
async def serving(flavour: Flavour, handler: Handler) -> AsyncIterator[tuple[Target, list[int]]]:
    """A server on 127.0.0.1 named ``localhost`` in its URL; yields the checked target and its connection count."""
    connections: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=flavour.tls())
    port = server.sockets[0].getsockname()[1]
    target = LOOPBACK.check_url(f"{flavour.scheme}://localhost:{port}", resolver=lambda host, p: ["127.0.0.1"])
    try:
        yield target, connections
    finally:
        server.close()


def run(flavour: Flavour, scenario: Callable[[Any], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        transport = flavour.transport()
        try:
            return await scenario(transport)
        finally:
            if isinstance(transport, LibraryTransport):
                await transport.aclose()
            else:
                transport.close()

    return asyncio.run(main())


def test_it_sends_the_request_to_the_checked_address_under_the_urls_host(flavour: Flavour) -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await read_request(reader))
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: 2\r\n\r\n{}"
            )
            await writer.drain()

    async def scenario(transport: Any) -> tuple[list[tuple[int, str, bytes]], int, Target]:
        async with serving(flavour, handler) as (target, connections):
            results = []
            for index in range(2):
                response = await transport.send(target, "/v1/chat/completions", b'{"n": %d}' % index, f"rid-{index}", 2)
                results.append((response.status, response.content_type, await response.read()))
                response.release()
            return results, len(connections), target

    results, connections, target = run(flavour, scenario)
    assert results == [(200, "application/json", b"{}")] * 2
    assert connections == 1  # kept alive
    head = seen[0].split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"post /v1/chat/completions http/1.1")
    assert b"host: localhost:%d" % target.port in head
    assert b"x-request-id: rid-0" in head
    assert b"content-type: application/json" in head
    assert seen[1].endswith(b'{"n": 1}')


def test_it_hands_over_a_streamed_body_as_it_arrives(flavour: Flavour) -> None:
    first_seen = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(b"9\r\ndata: 1\n\n\r\n")
        await writer.drain()
        await asyncio.wait_for(first_seen.wait(), 5)  # the rest only once the client had the first event
        writer.write(b"9\r\ndata: 2\n\n\r\n0\r\n\r\n")
        await writer.drain()

    async def scenario(transport: Any) -> list[bytes]:
        async with serving(flavour, handler) as (target, _):
            response = await transport.send(target, "/v1/completions", b"{}", "rid", 2)
            assert response.content_type == "text/event-stream"
            pieces = []
            async for data in response.iter_any():
                pieces.append(data)
                first_seen.set()
            response.release()
            return pieces

    assert b"".join(run(flavour, scenario)) == b"data: 1\n\ndata: 2\n\n"


def test_it_raises_a_connect_error_when_nobody_listens(flavour: Flavour) -> None:
    port = free_port()
    target = LOOPBACK.check_url(f"{flavour.scheme}://127.0.0.1:{port}", resolver=lambda host, p: [])

    async def scenario(transport: Any) -> None:
        await transport.send(target, "/v1/chat/completions", b"{}", "rid", 2)

    with pytest.raises(UpstreamConnectError):
        run(flavour, scenario)


def test_it_raises_a_reset_when_the_connection_breaks_mid_body(flavour: Flavour) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"partial')
        await writer.drain()
        writer.transport.abort()

    async def scenario(transport: Any) -> None:
        async with serving(flavour, handler) as (target, _):
            response = await transport.send(target, "/v1/chat/completions", b"{}", "rid", 2)
            try:
                await response.read()
            finally:
                response.close()

    with pytest.raises(UpstreamReset):
        run(flavour, scenario)


def test_it_tells_the_server_when_the_response_is_abandoned(flavour: Flavour) -> None:
    gone = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(b"9\r\ndata: 1\n\n\r\n")
        await writer.drain()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await reader.read()  # until the client closes
        gone.set()

    async def scenario(transport: Any) -> bool:
        async with serving(flavour, handler) as (target, _):
            response = await transport.send(target, "/v1/chat/completions", b"{}", "rid", 2)
            async for _ in response.iter_any():
                break
            response.close()
            await asyncio.wait_for(gone.wait(), 5)
            return gone.is_set()

    assert run(flavour, scenario)


def test_it_refuses_a_certificate_of_a_ca_it_does_not_trust(ca: tuple[Authority, Path]) -> None:
    authority, folder = ca
    rogue = Authority.create(folder, "rogue-transport-ca")
    flavour = Flavour("library", "https", authority, folder)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async def scenario(transport: Any) -> list[int]:
        untrusted = Flavour("library", "https", rogue, folder)
        async with serving(untrusted, handler) as (target, _):
            await transport.send(target, "/v1/chat/completions", b"{}", "rid", 2)
        return []

    with pytest.raises(UpstreamConnectError, match="certificate verify failed"):
        run(flavour, scenario)
