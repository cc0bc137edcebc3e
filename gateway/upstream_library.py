"""The library transport: what the hand-written client does not carry (https), through aiohttp, same interface.

``send(destination, ...)`` as in ``gateway/transport.py``. A pinned destination (a URL the address policy
checked) is connected to at its checked address only (the request URL carries the address, so aiohttp looks no
name up; the resolver of a transport for pinned destinations refuses every name besides), with the URL's host as
Host, and the certificate verified against that host name (SNI too). Trusted CAs: the system's, plus
``FRONTDOOR_GATEWAY_UPSTREAM_CA_BUNDLE`` for private ones.

aiohttp's errors are translated here, once: no connection (refused, unreachable, connect timeout, a TLS
handshake or certificate refused) is ``UpstreamConnectError``, a connection that broke is ``UpstreamReset``.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from controlplane.contracts.protocols import INFERENCE_HEADER_CONTENT_LENGTH
from gateway.transport import (
    JSON_POST,
    Destination,
    RequestHead,
    UpstreamConnectError,
    UpstreamReset,
    UpstreamTransport,
)
from gateway.upstream import IDLE_S


class _NoNames(AbstractResolver):
    """Every URL this transport requests names an address; a name reaching the resolver is a bug, refused."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        raise OSError(f"{host!r} is not an address: this transport connects to checked addresses only")

    async def close(self) -> None:
        return None


def client_tls_context(ca_bundle: str = "") -> ssl.SSLContext:
    """Certificate and host-name verification on, the system's CAs plus those of ``ca_bundle`` (a PEM file)."""
    context = ssl.create_default_context()
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    return context


class LibraryResponse:
    """An aiohttp response behind the interface of ``UpstreamResponse`` (``gateway.transport.UpstreamAnswer``)."""

    __slots__ = ("_response", "content_type", "inference_header", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.content_type = response.content_type.lower()
        self.inference_header = response.headers.get(INFERENCE_HEADER_CONTENT_LENGTH, "").strip()

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamReset(f"the upstream connection broke: {exc!r}") from None

    async def iter_any(self) -> AsyncIterator[bytes]:
        try:
            async for data in self._response.content.iter_any():
                yield data
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamReset(f"the upstream connection broke: {exc!r}") from None

    def release(self) -> None:
        self._response.release()  # back to the pool when read to its end, else closed

    def close(self) -> None:
        self._response.close()


class LibraryTransport(UpstreamTransport):
    """POSTs through one aiohttp session (opened on first use, inside the loop); carries every destination.

    ``resolve_names``: False for tenant-given endpoints, whose destinations are pinned to checked addresses (the
    session's resolver then refuses every name, so no URL can reach a name lookup by mistake); True for the
    replicas the platform publishes, whose host names are looked up at connect (cached 300 s) like any client's.
    """

    def __init__(self, pool_size: int = 1024, ca_bundle: str = "", resolve_names: bool = False) -> None:
        self.pool_size = pool_size
        self.tls = client_tls_context(ca_bundle)
        self.resolve_names = resolve_names
        self._session: aiohttp.ClientSession | None = None

    def supports(self, destination: Destination) -> bool:
        return True

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            names: dict[str, Any] = {"ttl_dns_cache": 300} if self.resolve_names else {"resolver": _NoNames()}
            connector = aiohttp.TCPConnector(
                limit=self.pool_size,
                limit_per_host=0,
                ssl=self.tls,
                use_dns_cache=self.resolve_names,
                keepalive_timeout=IDLE_S,  # like the hand-written pool: never reuse one the server may be closing
                **names,
            )
            # No Accept-Encoding: the relays forward bytes as they come, so the upstream must not compress them.
            self._session = aiohttp.ClientSession(
                connector=connector, skip_auto_headers=("User-Agent", "Accept-Encoding")
            )
        return self._session

    async def send(
        self,
        destination: Destination,
        path: str,
        body: bytes,
        request_id: str,
        connect_timeout_s: float,
        bearer: str = "",
        head: RequestHead = JSON_POST,
    ) -> LibraryResponse:
        """POST ``body`` (JSON) to ``path`` at ``destination``; returns once the response headers arrived."""
        host = destination.connect_host
        authority = f"[{host}]" if ":" in host else host
        url = URL(f"{destination.scheme}://{authority}:{destination.port}{path}", encoded=True)
        headers = {"Host": destination.authority, "Content-Type": head.content_type, "x-request-id": request_id}
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        if head.inference_header:
            headers[INFERENCE_HEADER_CONTENT_LENGTH] = head.inference_header
        timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout_s, sock_connect=connect_timeout_s)
        # The URL names the checked address of a pinned destination: the certificate must still match its host.
        pinned_tls = destination.pinned and destination.scheme == "https"
        options: dict[str, Any] = {"server_hostname": destination.host} if pinned_tls else {}
        try:
            response = await self._client().request(
                head.method, url, data=body, headers=headers, timeout=timeout, allow_redirects=False, **options
            )
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise UpstreamConnectError(exc) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamReset(f"the upstream connection broke: {exc!r}") from None
        return LibraryResponse(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
