"""The upstream transport interface, and which transport carries which endpoint.

A transport POSTs one JSON body and returns once the response headers arrived, with the body to read whole or
piece by piece (``UpstreamAnswer``). Two implement it: the hand-written HTTP/1.1 client (``gateway/upstream.py``),
measured for what the platform's replicas speak (plain ``http://`` to a host and port), and the library client
(``gateway/upstream_library.py``, aiohttp) for everything else (https above all). ``Transports`` picks one per
endpoint: the hand-written client where it ``supports`` the destination, the library elsewhere, or the library
for everything when the operator asks for it (``FRONTDOOR_GATEWAY_UPSTREAM_CLIENT=library``).

What a transport needs of an endpoint (where to connect, the Host header, the TLS name) is a ``Destination``,
built once per endpoint and cached, never per request. Both transports raise the same two errors:
``UpstreamConnectError`` when no connection could be opened (nothing was sent: safe to retry elsewhere) and
``UpstreamReset`` (an ``OSError``) when an open connection broke.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from controlplane.contracts.addresses import Target

MAX_CACHED = 4096  # platform endpoints remembered; past it the cache starts over (endpoints come and go)


class UpstreamConnectError(Exception):
    """No connection could be opened (refused, unreachable, connect timeout): nothing reached the server."""

    def __init__(self, os_error: BaseException) -> None:
        super().__init__(str(os_error))
        self.os_error = os_error


class UpstreamReset(ConnectionError):
    """The connection broke before the response was complete."""


class UpstreamAnswer(Protocol):
    """What a transport returns once the response headers arrived."""

    status: int
    content_type: str  # lower-cased media type, without parameters
    # The Open Inference Protocol's Inference-Header-Content-Length as sent ("" none): the binary extension.
    inference_header: str

    async def read(self) -> bytes: ...

    def iter_any(self) -> AsyncIterator[bytes]: ...

    def release(self) -> None:
        """Hand the connection back when the body was read to its end and may be kept; else close it."""

    def close(self) -> None:
        """Drop the connection: what tells a model server to stop generating."""


@dataclass(frozen=True, slots=True)
class RequestHead:
    """What an upstream request says besides its path and body: all of it chosen by the gateway, none by a client.

    ``inference_header``: the length of the JSON header before binary tensor data (the Open Inference Protocol's
    ``Inference-Header-Content-Length``), as the digits the gateway checked; "" sends none.
    """

    method: str = "POST"
    content_type: str = "application/json"
    inference_header: str = ""


JSON_POST = RequestHead()


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a transport connects for one endpoint and what it sends as Host; built once per endpoint.

    ``pinned``: ``connect_host`` is an address the address policy checked, connected to as is and never looked up
    (a tenant-given endpoint). Otherwise it is the URL's host (a replica the platform publishes), looked up at
    connect like any URL's.
    """

    scheme: str
    host: str  # the URL's host: the TLS name
    connect_host: str
    port: int
    authority: str  # the Host header
    authority_bytes: bytes
    pinned: bool


def host_header(target: Target) -> str:
    """The Host header (and authority) of a checked URL: its host, with the port unless it is the default."""
    host = f"[{target.host}]" if ":" in target.host else target.host
    default = 443 if target.scheme == "https" else 80
    return host if target.port == default else f"{host}:{target.port}"


def pinned_destination(target: Target) -> Destination:
    """A checked URL's destination: its checked address, its host as Host header and TLS name."""
    authority = host_header(target)
    return Destination(target.scheme, target.host, target.address, target.port, authority, authority.encode(), True)


def replica_destination(endpoint: str) -> Destination:
    """A published replica's destination: ``scheme://host[:port]``, the URL's authority as Host header.

    A URL without a host, or of another scheme than http(s), is no destination: ``UpstreamConnectError``.
    """
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError as exc:
        raise UpstreamConnectError(ValueError(f"unsupported upstream URL {endpoint!r}: {exc}")) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamConnectError(ValueError(f"unsupported upstream URL {endpoint!r}"))
    port = port or (443 if parts.scheme == "https" else 80)
    netloc = parts.netloc
    return Destination(parts.scheme, parts.hostname, parts.hostname, port, netloc, netloc.encode(), False)


class UpstreamTransport(abc.ABC):
    """POSTs to upstreams; ``send`` returns once the response headers arrived, the body still to be read."""

    @abc.abstractmethod
    def supports(self, destination: Destination) -> bool:
        """Whether this transport can carry requests to ``destination``."""

    @abc.abstractmethod
    async def send(
        self,
        destination: Destination,
        path: str,
        body: bytes,
        request_id: str,
        connect_timeout_s: float,
        bearer: str = "",
        head: RequestHead = JSON_POST,
    ) -> UpstreamAnswer:
        """POST ``body`` (JSON) to ``path`` at ``destination``, with ``x-request-id``; raises the errors above.

        ``bearer``: sent as ``Authorization: Bearer <bearer>`` (an external deployment's upstream key; "" sends no
        Authorization at all). Nothing of the client's request but its body is sent: never the client's own key.
        The caller checked it is visible ASCII (``controlplane.contracts.snapshot.upstream_key_problem``).
        ``head``: another method, content type or Open Inference Protocol header (v2 metadata GETs, binary tensors).
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close every connection the transport keeps."""


class Transports:
    """The transport of each endpoint: ``fast`` where it supports the destination, the library elsewhere.

    ``library`` carries published replicas (it looks their names up like any client), ``pinned_library``
    tenant-given endpoints (it refuses to look any name up: every URL it gets names a checked address).
    ``library_only`` sends everything to the library transports (the operator's switch).
    """

    def __init__(
        self,
        fast: UpstreamTransport,
        library: UpstreamTransport,
        pinned_library: UpstreamTransport,
        library_only: bool = False,
    ) -> None:
        self.fast = fast
        self.library = library
        self.pinned_library = pinned_library
        self.library_only = library_only
        self._replicas: dict[str, tuple[UpstreamTransport, Destination]] = {}

    def for_replica(self, endpoint: str) -> tuple[UpstreamTransport, Destination]:
        """The transport and destination of a published replica's URL (parsed once, then cached)."""
        route = self._replicas.get(endpoint)
        if route is None:
            destination = replica_destination(endpoint)
            if len(self._replicas) >= MAX_CACHED:
                self._replicas.clear()
            route = self._replicas[endpoint] = (self._choose(destination, self.library), destination)
        return route

    def library_for_replica(self, endpoint: str) -> tuple[UpstreamTransport, Destination]:
        """The library transport and the destination of a published replica's URL, whatever ``fast`` supports.

        For embeddings batches: the hand-written client was measured for chat and completions; batches, merged
        and fewer, stay with the library.
        """
        return self.library, self.for_replica(endpoint)[1]

    def for_target(self, target: Target) -> tuple[UpstreamTransport, Destination]:
        """The transport and destination of a URL the address policy checked (the caller caches them)."""
        destination = pinned_destination(target)
        return self._choose(destination, self.pinned_library), destination

    def _choose(self, destination: Destination, library: UpstreamTransport) -> UpstreamTransport:
        if not self.library_only and self.fast.supports(destination):
            return self.fast
        return library

    async def aclose(self) -> None:
        for transport in (self.fast, self.library, self.pinned_library):
            await transport.aclose()
