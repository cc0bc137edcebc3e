"""Connecting to tenant-given endpoints (runtime ``external``): the address policy at connect, then a pinned POST.

Each endpoint URL is checked with the snapshot's ``AddressPolicy`` before any connection: its host is resolved once
(off the event loop; ``resolver`` is the hook tests pass so that no lookup leaves the machine), every address must
pass, and the request goes to the checked address, never to a second lookup (which DNS rebinding would exploit),
with the URL's host as Host header and TLS name. The check also picks the endpoint's transport
(``gateway.transport.Transports``): http through the hand-written client, https through the library transport
(both through the library when the operator says so).

Checks are cached per endpoint until the next snapshot: a literal address for the whole snapshot, a name for
``name_ttl_s`` (its answer may change; the request still connects to what was checked). Concurrent checks of one
endpoint share one lookup. Replicas the platform publishes never come here (``gateway/proxy.py``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from controlplane.contracts.addresses import (
    Address,
    AddressPolicy,
    AddressRefused,
    Target,
    parse_address,
    service_pairs,
    split_url,
)
from gateway.config import GatewayConfig
from gateway.snapshot_index import Snapshot
from gateway.transport import (
    JSON_POST,
    Destination,
    RequestHead,
    Transports,
    UpstreamAnswer,
    UpstreamConnectError,
    UpstreamTransport,
)

log = logging.getLogger("frontdoor.gateway.external")

AsyncResolver = Callable[[str, int], Awaitable[list[str]]]
NAME_TTL_S = 5.0
MAX_CACHED = 4096
_DEFAULT_PORTS = {"redis": 6379, "rediss": 6379}


class EndpointRefused(UpstreamConnectError):
    """The address policy refused the endpoint: no connection was attempted."""


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, looked up off the event loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def loggable(endpoint: str) -> str:
    """An endpoint for the log: scheme, host, port and path, never a query string (it may hold a token)."""
    try:
        parts = urlsplit(endpoint)
    except ValueError:
        return repr(endpoint[:100])
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def request_path(target: Target, path: str) -> str:
    """The endpoint's own path (a base URL such as ``https://host/openai``) in front of the API path."""
    base, _, query = target.path.partition("?")
    full = base.rstrip("/") + path
    return f"{full}?{query}" if query else full


@dataclass(frozen=True, slots=True)
class Pinned:
    """A checked endpoint: the transport that carries it and the destination it may connect to."""

    target: Target
    transport: UpstreamTransport
    destination: Destination


async def local_services(
    config: GatewayConfig, resolver: AsyncResolver = system_resolve
) -> frozenset[tuple[Address, int]]:
    """This process's own listeners (inference and metrics) and its Redis: no external endpoint may point back at them.

    The control plane lists the platform's services in the snapshot; these two are added by the gateway itself
    so they are refused even before the first snapshot, or when the snapshot's list is incomplete.
    """
    pairs: list[tuple[str, int]] = [(config.listen_host, config.listen_port)]
    if config.metrics_port:  # every worker's metrics port (metrics_port .. + workers - 1)
        pairs.extend((config.metrics_host, config.metrics_port + i) for i in range(max(1, config.workers)))
    try:
        parts = urlsplit(config.redis_url)
        if parts.hostname and parts.scheme in _DEFAULT_PORTS:
            pairs.append((parts.hostname, parts.port or _DEFAULT_PORTS[parts.scheme]))
    except ValueError:
        pass  # a Redis URL that does not parse fails at connect, loudly; there is nothing to refuse
    resolved: dict[tuple[str, int], list[str]] = {}
    for host, port in pairs:
        if parse_address(host) is None:
            try:
                resolved[(host, port)] = await resolver(host, port)
            except (OSError, UnicodeError) as exc:
                log.warning("own listener %s:%s does not resolve (%s): it is not on the refused list", host, port, exc)

    def lookup(host: str, port: int) -> list[str]:
        if (host, port) not in resolved:
            raise OSError(f"{host} did not resolve")
        return resolved[(host, port)]

    return service_pairs(pairs, resolver=lookup)


class ExternalUpstream:
    """``post(endpoint, ...)`` for tenant-given endpoints: the address policy first, then a pinned connection.

    ``resolver``: how names are looked up (tests pass one so that no name is looked up for real).
    """

    def __init__(self, transports: Transports, resolver: AsyncResolver = system_resolve) -> None:
        self.transports = transports
        self.resolver = resolver
        self.name_ttl_s = NAME_TTL_S
        self.policy = AddressPolicy()
        # endpoint -> (monotonic expiry, checked endpoint or the refusal)
        self._checked: dict[str, tuple[float, Pinned | AddressRefused]] = {}
        self._pending: dict[str, asyncio.Task[Pinned | AddressRefused]] = {}

    def use(self, snapshot: Snapshot) -> None:
        """A new snapshot: its policy applies from now on, and every cached check is dropped."""
        self.policy = snapshot.address_policy
        self._checked.clear()
        self._pending.clear()  # lookups under way finish for their waiters; new requests check anew

    async def check(self, endpoint: str, timeout_s: float) -> Pinned:
        """The checked ``endpoint``; raises ``AddressRefused``, or ``TimeoutError`` for a slow lookup."""
        cached = self._checked.get(endpoint)
        if cached is not None and cached[0] > time.monotonic():
            result = cached[1]
        else:
            task = self._pending.get(endpoint)
            if task is None:
                task = asyncio.get_running_loop().create_task(self._check_now(endpoint, self.policy))
                self._pending[endpoint] = task
                task.add_done_callback(self._forget_pending(endpoint))
            # Shielded: a request that gives up (timeout, disconnect) leaves the lookup to the others waiting.
            async with asyncio.timeout(timeout_s):
                result = await asyncio.shield(task)
        if isinstance(result, AddressRefused):
            raise result
        return result

    def _forget_pending(self, endpoint: str) -> Callable[[asyncio.Task[Pinned | AddressRefused]], None]:
        def forget(task: asyncio.Task[Pinned | AddressRefused]) -> None:
            if self._pending.get(endpoint) is task:
                del self._pending[endpoint]

        return forget

    async def _check_now(self, endpoint: str, policy: AddressPolicy) -> Pinned | AddressRefused:
        ttl_s = float("inf")  # literal addresses and malformed URLs: until the next snapshot
        result: Pinned | AddressRefused
        try:
            _, host, port, _ = split_url(endpoint)
            if parse_address(host) is None:
                ttl_s = self.name_ttl_s
                addresses = await self._resolve(host, port)
                target = policy.check_url(endpoint, resolver=lambda _host, _port: addresses)
            else:
                target = policy.check_url(endpoint, resolver=_no_lookup)
            result = Pinned(target, *self.transports.for_target(target))
        except AddressRefused as refused:
            result = refused
        if policy is self.policy:  # a check made under a replaced policy is not kept
            if len(self._checked) >= MAX_CACHED:
                self._checked.clear()
            self._checked[endpoint] = (time.monotonic() + ttl_s, result)
        return result

    async def _resolve(self, host: str, port: int) -> list[str]:
        try:
            return await self.resolver(host, port)
        except (OSError, UnicodeError, ValueError) as exc:
            raise AddressRefused(f"{host!r} does not resolve: {exc}") from None

    async def post(
        self,
        endpoint: str,
        path: str,
        body: bytes,
        request_id: str,
        connect_timeout_s: float,
        bearer: str = "",
        head: RequestHead = JSON_POST,
    ) -> UpstreamAnswer:
        """POST to a tenant-given endpoint at the address its check allowed; ``EndpointRefused`` when refused.

        ``bearer``: the deployment's upstream key, sent as ``Authorization: Bearer`` ("" sends none). It goes only
        to an endpoint that passed the check, and never further: redirects are not followed.
        """
        try:
            pinned = await self.check(endpoint, connect_timeout_s)
        except AddressRefused as refused:
            log.warning(
                "request %s: endpoint %s refused by the address policy: %s", request_id, loggable(endpoint), refused
            )
            raise EndpointRefused(refused) from None
        except TimeoutError:
            raise UpstreamConnectError(TimeoutError(f"resolving {loggable(endpoint)} took too long")) from None
        full_path = request_path(pinned.target, path)
        return await pinned.transport.send(
            pinned.destination, full_path, body, request_id, connect_timeout_s, bearer, head
        )


def _no_lookup(host: str, port: int) -> list[str]:
    raise OSError(f"{host} is an address, not a name")
