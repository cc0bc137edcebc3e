"""The library transport: what the hand-written client does not carry (https), through aiohttp, same interface.

``send(target, ...)`` takes a URL the address policy checked, like ``UpstreamPool.send``: it connects to the
checked address only (the request URL carries the address, so aiohttp looks no name up; its resolver refuses
every name besides), sends the URL's host as Host, and verifies the certificate against that host name (SNI
too). Trusted CAs: the system's, plus ``FRONTDOOR_GATEWAY_UPSTREAM_CA_BUNDLE`` for private ones.

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

from controlplane.contracts.addresses import Target
from gateway.upstream import IDLE_S, UpstreamConnectError, UpstreamReset, host_header


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
    """An aiohttp response behind the interface of ``UpstreamResponse`` (``gateway.upstream.UpstreamAnswer``)."""

    __slots__ = ("_response", "content_type", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.content_type = response.content_type.lower()

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


class LibraryTransport:
    """https POSTs to checked targets through one aiohttp session (opened on first use, inside the loop)."""

    def __init__(self, pool_size: int = 1024, ca_bundle: str = "") -> None:
        self.pool_size = pool_size
        self.tls = client_tls_context(ca_bundle)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.pool_size,
                limit_per_host=0,
                ssl=self.tls,
                resolver=_NoNames(),
                use_dns_cache=False,
                keepalive_timeout=IDLE_S,  # like the hand-written pool: never reuse one the server may be closing
            )
            # No Accept-Encoding: the relays forward bytes as they come, so the upstream must not compress them.
            self._session = aiohttp.ClientSession(
                connector=connector, skip_auto_headers=("User-Agent", "Accept-Encoding")
            )
        return self._session

    async def send(
        self, target: Target, path: str, body: bytes, request_id: str, connect_timeout_s: float
    ) -> LibraryResponse:
        """POST ``body`` (JSON) to the checked ``target`` at ``path``; returns once the response headers arrived."""
        authority = f"[{target.address}]" if ":" in target.address else target.address
        url = URL(f"{target.scheme}://{authority}:{target.port}{path}", encoded=True)
        headers = {"Host": host_header(target), "Content-Type": "application/json", "x-request-id": request_id}
        timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout_s, sock_connect=connect_timeout_s)
        options: dict[str, Any] = {"server_hostname": target.host} if target.scheme == "https" else {}
        try:
            response = await self._client().post(
                url, data=body, headers=headers, timeout=timeout, allow_redirects=False, **options
            )
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise UpstreamConnectError(exc) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamReset(f"the upstream connection broke: {exc!r}") from None
        return LibraryResponse(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
