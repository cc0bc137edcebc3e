"""One conformance suite for both upstream transports behind ``UpstreamTransport.send(destination, ...)``.

The hand-written client (``UpstreamPool``: plain http) and the library transport (``LibraryTransport``: https, and
http too) must behave alike for the relays: status and media type once headers arrived, whole bodies of every
framing (content-length, chunked, until close), streamed bodies handed over as they arrive, large bodies,
pinned connections (the checked address, the URL's host as Host), keep-alive, and the same two errors
(``UpstreamConnectError`` when nothing was sent, ``UpstreamReset`` when a connection broke). Each server here is
a few lines of asyncio on loopback answering exact bytes, over TLS with a certificate of a test CA for https.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controlplane.contracts.addresses import AddressPolicy, parse_networks
from gateway.transport import (
    Destination,
    UpstreamConnectError,
    UpstreamReset,
    UpstreamTransport,
    pinned_destination,
    replica_destination,
)
from gateway.upstream import UpstreamPool
from gateway.upstream_library import LibraryTransport
from tests.gateway.pki import Authority, server_context
from tests.support.gateway import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
LOOPBACK = AddressPolicy(allowed_networks=parse_networks(["127.0.0.0/8"]))
JSON_200 = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
SSE_200 = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


@dataclass
class Flavour:
    """A transport and the scheme it is tested with; ``ca`` is the trusted test CA (https)."""

    name: str
    scheme: str
    ca: Authority
    folder: Path

    def transport(self, resolve_names: bool = False) -> UpstreamTransport:
        if self.name == "hand-written":
            return UpstreamPool()
        return LibraryTransport(ca_bundle=str(self.ca.pem), resolve_names=resolve_names)

    def tls(self) -> ssl.SSLContext | None:
        if self.scheme != "https":
            return None
        return server_context(*self.ca.issue(self.folder, "transport"))

    def destination(self, port: int) -> Destination:
        """A checked URL naming ``localhost`` (the certificate's name), pinned to 127.0.0.1."""
        target = LOOPBACK.check_url(f"{self.scheme}://localhost:{port}", resolver=lambda host, p: ["127.0.0.1"])
        return pinned_destination(target)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Path]:
    folder = tmp_path_factory.mktemp("transport-pki")
    return Authority.create(folder, "transport-test-ca"), folder


@pytest.fixture(params=["hand-written http", "library http", "library https"])
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


@dataclass
class Upstream:
    """A running test server: the destination to send to, and the connections it accepted and saw closed."""

    destination: Destination
    connections: list[int]
    closed: asyncio.Event


@asynccontextmanager
async def serving(flavour: Flavour, handler: Handler) -> AsyncIterator[Upstream]:
    connections: list[int] = []
    closed = asyncio.Event()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            closed.set()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=flavour.tls())
    port = server.sockets[0].getsockname()[1]
    try:
        yield Upstream(flavour.destination(port), connections, closed)
    finally:
        server.close()


def run(transport: UpstreamTransport, scenario: Callable[[UpstreamTransport], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        try:
            return await scenario(transport)
        finally:
            await transport.aclose()

    return asyncio.run(main())


def answering(*responses: bytes) -> Handler:
    """A handler that answers each request on a connection with the next of ``responses`` (the last repeats)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for index in range(1000):
            await read_request(reader)
            writer.write(responses[min(index, len(responses) - 1)])
            await writer.drain()

    return handler


async def whole(transport: UpstreamTransport, destination: Destination, path: str = "/v1/chat/completions") -> Any:
    """(status, content type, body) of one request, read whole and released."""
    response = await transport.send(destination, path, b"{}", "rid", 2)
    try:
        return response.status, response.content_type, await response.read()
    finally:
        response.release()


# --- requests and answers ------------------------------------------------------------------------------------


def test_it_sends_the_request_to_the_checked_address_under_the_urls_host(flavour: Flavour) -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await read_request(reader))
            writer.write(JSON_200 % 2 + b"{}")
            await writer.drain()

    async def scenario(transport: UpstreamTransport) -> tuple[list[tuple[int, str, bytes]], int, int]:
        async with serving(flavour, handler) as upstream:
            results = []
            for index in range(2):
                body = b'{"n": %d}' % index
                response = await transport.send(upstream.destination, "/v1/chat/completions", body, f"rid-{index}", 2)
                results.append((response.status, response.content_type, await response.read()))
                response.release()
            return results, len(upstream.connections), upstream.destination.port

    results, connections, port = run(flavour.transport(), scenario)
    assert results == [(200, "application/json", b"{}")] * 2
    assert connections == 1  # kept alive
    head = seen[0].split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"post /v1/chat/completions http/1.1")
    assert b"host: localhost:%d" % port in head
    assert b"x-request-id: rid-0" in head
    assert b"content-type: application/json" in head
    assert seen[1].endswith(b'{"n": 1}')


def test_it_gives_the_status_and_the_bare_media_type_of_any_answer(flavour: Flavour) -> None:
    error = b'{"error": {"message": "too long"}}'
    head = b"HTTP/1.1 400 Bad Request\r\nContent-Type: Application/JSON; charset=utf-8\r\nContent-Length: %d\r\n\r\n"

    async def scenario(transport: UpstreamTransport) -> Any:
        async with serving(flavour, answering(head % len(error) + error)) as upstream:
            return await whole(transport, upstream.destination)

    assert run(flavour.transport(), scenario) == (400, "application/json", error)


@pytest.mark.parametrize(
    "answer",
    [
        JSON_200 % 12 + b'{"ok": true}',
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        b'5\r\n{"ok"\r\n7\r\n: true}\r\n0\r\n\r\n',
    ],
    ids=["content-length", "chunked"],
)
def test_it_reads_a_whole_body_of_either_framing(flavour: Flavour, answer: bytes) -> None:
    async def scenario(transport: UpstreamTransport) -> Any:
        async with serving(flavour, answering(answer)) as upstream:
            return [await whole(transport, upstream.destination) for _ in range(2)], len(upstream.connections)

    answers, connections = run(flavour.transport(), scenario)
    assert answers == [(200, "application/json", b'{"ok": true}')] * 2
    assert connections == 1  # read to its end, the connection was kept


def test_it_reads_a_body_that_ends_with_the_connection(flavour: Flavour) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nuntil the end")
        await writer.drain()

    async def scenario(transport: UpstreamTransport) -> Any:
        async with serving(flavour, handler) as upstream:
            return await whole(transport, upstream.destination)

    assert run(flavour.transport(), scenario) == (200, "text/plain", b"until the end")


def test_it_hands_over_a_streamed_body_as_it_arrives(flavour: Flavour) -> None:
    first_seen = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_200 + b"9\r\ndata: 1\n\n\r\n")
        await writer.drain()
        await asyncio.wait_for(first_seen.wait(), 5)  # the rest only once the client had the first event
        writer.write(b"9\r\ndata: 2\n\n\r\n0\r\n\r\n")
        await writer.drain()

    async def scenario(transport: UpstreamTransport) -> tuple[str, list[bytes]]:
        async with serving(flavour, handler) as upstream:
            response = await transport.send(upstream.destination, "/v1/completions", b"{}", "rid", 2)
            pieces = []
            async for data in response.iter_any():
                pieces.append(data)
                first_seen.set()
            response.release()
            return response.content_type, pieces

    content_type, pieces = run(flavour.transport(), scenario)
    assert content_type == "text/event-stream"
    assert pieces[0] == b"data: 1\n\n"
    assert b"".join(pieces) == b"data: 1\n\ndata: 2\n\n"


@pytest.mark.parametrize("read", ["whole", "streamed"])
def test_it_carries_a_large_body_intact(flavour: Flavour, read: str) -> None:
    body = bytes(range(256)) * (24 * 1024)  # 6 MiB: several times the hand-written client's read-pause mark

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(JSON_200 % len(body))
        for start in range(0, len(body), 1 << 16):
            writer.write(body[start : start + (1 << 16)])
            await writer.drain()

    async def scenario(transport: UpstreamTransport) -> bytes:
        async with serving(flavour, handler) as upstream:
            response = await transport.send(upstream.destination, "/v1/embeddings", b"{}", "rid", 2)
            if read == "whole":
                data = await response.read()
            else:
                pieces = []
                async for piece in response.iter_any():
                    pieces.append(piece)
                    await asyncio.sleep(0)  # a slow reader: the body waits for it, none is lost
                data = b"".join(pieces)
            response.release()
            return data

    assert run(flavour.transport(), scenario) == body


def test_it_replaces_a_kept_connection_that_the_server_closed(flavour: Flavour) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(JSON_200 % 2 + b"ok")
        await writer.drain()
        # then close without saying so, as a server whose keep-alive timeout passed

    async def scenario(transport: UpstreamTransport) -> tuple[list[bytes], int]:
        async with serving(flavour, handler) as upstream:
            bodies = []
            for _ in range(2):
                bodies.append((await whole(transport, upstream.destination))[2])
                await asyncio.sleep(0.05)
            return bodies, len(upstream.connections)

    assert run(flavour.transport(), scenario) == ([b"ok", b"ok"], 2)


@pytest.mark.parametrize("name", ["hand-written", "library"])
def test_it_connects_to_a_published_replica_by_its_name(ca: tuple[Authority, Path], name: str) -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(JSON_200 % 2 + b"{}")
        await writer.drain()

    flavour = Flavour(name, "http", *ca)

    async def scenario(transport: UpstreamTransport) -> Any:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await whole(transport, replica_destination(f"http://localhost:{port}"))
        finally:
            server.close()

    assert run(flavour.transport(resolve_names=True), scenario) == (200, "application/json", b"{}")
    assert b"\r\nhost: localhost:" in seen[0].lower()


# --- failures --------------------------------------------------------------------------------------------------


def test_it_raises_a_connect_error_when_nobody_listens(flavour: Flavour) -> None:
    destination = flavour.destination(free_port())

    async def scenario(transport: UpstreamTransport) -> None:
        await transport.send(destination, "/v1/chat/completions", b"{}", "rid", 2)

    with pytest.raises(UpstreamConnectError):
        run(flavour.transport(), scenario)


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A port whose listener never accepts and whose backlog is full: a connect there hangs until its timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        try:
            yield port
        finally:
            for filler in fillers:
                filler.close()


def test_it_raises_a_connect_error_when_the_connect_times_out(flavour: Flavour, full_backlog: int) -> None:
    destination = flavour.destination(full_backlog)

    async def scenario(transport: UpstreamTransport) -> None:
        async with asyncio.timeout(5):  # the transport's own connect timeout must fire first
            await transport.send(destination, "/v1/chat/completions", b"{}", "rid", 0.3)

    with pytest.raises(UpstreamConnectError):
        run(flavour.transport(), scenario)


@pytest.mark.parametrize(
    "answer",
    [
        b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"partial',
        SSE_200 + b"9\r\ndata: 1\n\n\r\n",
    ],
    ids=["content-length", "chunked"],
)
def test_it_raises_a_reset_when_the_connection_breaks_mid_body(flavour: Flavour, answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()

    async def scenario(transport: UpstreamTransport) -> None:
        async with serving(flavour, handler) as upstream:
            response = await transport.send(upstream.destination, "/v1/chat/completions", b"{}", "rid", 2)
            try:
                async for _ in response.iter_any():
                    pass
            finally:
                response.close()

    with pytest.raises(UpstreamReset):
        run(flavour.transport(), scenario)


def test_it_drops_the_connection_when_the_caller_stops_waiting_for_an_answer(flavour: Flavour) -> None:
    silent_once: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if not silent_once:
            silent_once.append(1)
            await reader.read()  # no answer: until the client closes
            return
        writer.write(JSON_200 % 2 + b"{}")
        await writer.drain()

    async def scenario(transport: UpstreamTransport) -> tuple[bool, Any, int]:
        async with serving(flavour, handler) as upstream:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.3):  # the relays' first-byte timeout
                    await transport.send(upstream.destination, "/v1/chat/completions", b"{}", "rid", 2)
            await asyncio.wait_for(upstream.closed.wait(), 5)
            return upstream.closed.is_set(), await whole(transport, upstream.destination), len(upstream.connections)

    closed, answer, connections = run(flavour.transport(), scenario)
    assert closed  # the model server learns that nobody waits for its answer
    assert answer == (200, "application/json", b"{}")
    assert connections == 2  # the abandoned connection was not reused


def test_it_tells_the_server_when_the_response_is_abandoned(flavour: Flavour) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_200 + b"9\r\ndata: 1\n\n\r\n")
        await writer.drain()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await reader.read()  # until the client closes

    async def scenario(transport: UpstreamTransport) -> bool:
        async with serving(flavour, handler) as upstream:
            response = await transport.send(upstream.destination, "/v1/chat/completions", b"{}", "rid", 2)
            async for _ in response.iter_any():
                break
            response.close()
            await asyncio.wait_for(upstream.closed.wait(), 5)
            return upstream.closed.is_set()

    assert run(flavour.transport(), scenario)


# --- what only the library carries: TLS ----------------------------------------------------------------------


def test_it_refuses_a_certificate_of_a_ca_it_does_not_trust(ca: tuple[Authority, Path]) -> None:
    authority, folder = ca
    trusting = Flavour("library", "https", authority, folder)
    untrusted = Flavour("library", "https", Authority.create(folder, "rogue-transport-ca"), folder)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async def scenario(transport: UpstreamTransport) -> None:
        async with serving(untrusted, handler) as upstream:
            await transport.send(upstream.destination, "/v1/chat/completions", b"{}", "rid", 2)

    with pytest.raises(UpstreamConnectError, match="certificate verify failed"):
        run(trusting.transport(), scenario)


def test_the_hand_written_client_leaves_https_to_the_library(ca: tuple[Authority, Path]) -> None:
    destination = Flavour("hand-written", "https", *ca).destination(free_port())
    assert not UpstreamPool().supports(destination)
    assert LibraryTransport().supports(destination)
