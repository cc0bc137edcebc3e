"""The one address policy: where a tenant-given URL (webhook, external endpoint) may make the platform connect.

Refused: loopback, private, link-local (and the cloud metadata addresses), CGNAT, multicast, reserved and
unspecified addresses, in every spelling (IPv4-mapped IPv6, decimal, octal and hex IPv4 forms, names that
resolve to them); schemes other than http/https; credentials in the URL; ports outside 1-65535; anything that
does not parse. Operators may allow networks (``allowed_networks``); even then the platform's own services and
the replicas of other deployments stay refused, matched by (address, port).

A name is resolved once, every address it resolves to must pass, and the caller connects to the checked address
(``Target.address``), never resolving again: a second lookup is what DNS rebinding exploits.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

SCHEMES = frozenset({"http", "https"})
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_METADATA = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
# Legacy numeric IPv4 spellings that inet_aton (and so every resolver) accepts: 2130706433, 0177.1, 0x7f.0.0.1.
_NUMERIC_V4 = re.compile(r"^(0[xX][0-9a-fA-F]+|[0-9]+)(\.(0[xX][0-9a-fA-F]+|[0-9]+)){0,3}\.?$")
_UNSAFE_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


class AddressRefused(ValueError):
    """The URL or address is not one the platform may connect to; the message says why (for the tenant)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL: connect to ``address`` (already checked), send ``host`` as the Host header and TLS name."""

    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]

    @property
    def address(self) -> str:
        return self.addresses[0]


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def parse_address(raw: str) -> Address | None:
    """An IP address in any spelling a resolver would accept, normalised (IPv4-mapped IPv6 becomes IPv4); or None.

    ``None`` means ``raw`` is a host name that needs resolving.
    """
    text = raw.strip("[]").split("%", 1)[0]
    try:
        address: Address = ipaddress.ip_address(text)
    except ValueError:
        if not _NUMERIC_V4.match(text):
            return None
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(text.rstrip(".")))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_public_address(address: Address) -> bool:
    """True only for globally routable unicast addresses."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address.sixtofour is not None and not is_public_address(address.sixtofour):
            return False  # a 6to4 relay delivers 2002:<v4>::/48 to that IPv4 address, so it must pass too
    if address in _METADATA:
        return False
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return False
    return address.is_global and not (
        address.is_multicast
        or address.is_loopback
        or address.is_link_local
        or address.is_private
        or address.is_reserved
        or address.is_unspecified
    )


def parse_networks(raw: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs such as ``10.20.0.0/16``; raises ``ValueError`` naming the bad one."""
    networks: list[Network] = []
    for item in raw:
        text = item.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a network in CIDR form (e.g. 10.20.0.0/16): {exc}") from exc
    return tuple(networks)


def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of an http(s) URL; raises ``AddressRefused`` for anything else."""
    if not isinstance(url, str) or not url:
        raise AddressRefused("give an http:// or https:// URL")
    if _UNSAFE_CHARS.search(url):
        raise AddressRefused("the URL contains spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise AddressRefused(f"not a valid URL: {exc}") from exc
    if parts.scheme not in SCHEMES:
        raise AddressRefused(f"only http and https URLs are allowed, not {parts.scheme or 'no scheme'!r}")
    if parts.username is not None or parts.password is not None:
        raise AddressRefused("credentials in the URL are not allowed")
    if not host:
        raise AddressRefused("the URL has no host")
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    elif not 1 <= port <= 65535:
        raise AddressRefused(f"port {port} is outside 1-65535")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.scheme, host, port, path


_LOOPBACKS = (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address(1))


def _listed(address: Address, port: int, pairs: frozenset[tuple[Address, int]]) -> bool:
    """Whether ``address:port`` is in ``pairs``; a loopback address also matches 127.0.0.1 and ::1 on that port.

    A listener bound to every address (or to ``::`` dual-stack) answers on 127.0.0.2 and ::1 as well as on the
    127.0.0.1 its URL names, so another loopback spelling must not reach it.
    """
    if (address, port) in pairs:
        return True
    return address.is_loopback and any((loopback, port) in pairs for loopback in _LOOPBACKS)


@dataclass(frozen=True)
class AddressPolicy:
    """Which (address, port) pairs a tenant-given URL may reach.

    ``allowed_networks``: networks the operator allows beyond the public internet. ``platform_services``: the
    platform's own listeners; an unspecified address (0.0.0.0 or ::) there stands for every address that is not
    public, on that port. ``replicas``: (address, port) of the replicas the platform's backends run, each refused
    to any deployment but its own (the caller passes the set that excludes the asking deployment's).
    """

    allowed_networks: tuple[Network, ...] = ()
    platform_services: frozenset[tuple[Address, int]] = field(default_factory=frozenset)
    replicas: frozenset[tuple[Address, int]] = field(default_factory=frozenset)

    def refusal(self, address: Address, port: int, replicas: frozenset[tuple[Address, int]] | None = None) -> str:
        """Why ``address:port`` is refused, or "" when it is allowed."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        public = is_public_address(address)
        if not public and not any(address.version == net.version and address in net for net in self.allowed_networks):
            return f"{address} is not a public address"
        if _listed(address, port, self.platform_services):
            return f"{address}:{port} is one of the platform's own services"
        if not public:
            for wildcard in (ipaddress.IPv4Address(0), ipaddress.IPv6Address(0)):
                if (wildcard, port) in self.platform_services:
                    return f"port {port} belongs to one of the platform's own services"
        if _listed(address, port, self.replicas if replicas is None else replicas):
            return f"{address}:{port} is a replica of another deployment"
        return ""

    def check_url(
        self,
        url: str,
        *,
        resolver: Resolver = system_resolver,
        replicas: frozenset[tuple[Address, int]] | None = None,
    ) -> Target:
        """Check ``url`` and every address its host resolves to; raises ``AddressRefused`` with the reason."""
        scheme, host, port, path = split_url(url)
        literal = parse_address(host)
        if literal is not None:
            addresses: list[Address] = [literal]
        else:
            try:
                resolved = resolver(host, port)
            except (OSError, UnicodeError) as exc:
                raise AddressRefused(f"{host!r} does not resolve: {exc}") from exc
            addresses = []
            for raw in resolved:
                parsed = parse_address(raw)
                if parsed is None:
                    raise AddressRefused(f"{host!r} resolves to {raw!r}, which is not an address")
                addresses.append(parsed)
            if not addresses:
                raise AddressRefused(f"{host!r} does not resolve")
        # Every address must pass: a name resolving to one public and one private address is refused.
        for address in addresses:
            reason = self.refusal(address, port, replicas)
            if reason:
                raise AddressRefused(reason if literal is not None else f"{host!r} resolves to {address}, and {reason}")
        return Target(scheme, host, port, path, tuple(str(a) for a in dict.fromkeys(addresses)))


def _pairs(host: str, port: int, resolver: Resolver | None) -> set[tuple[Address, int]]:
    """(address, port) for a literal host, or for each address a name resolves to (none when it does not)."""
    literal = parse_address(host)
    if literal is not None:
        return {(literal, port)}
    if resolver is None:
        return set()
    try:
        resolved = resolver(host, port)
    except (OSError, UnicodeError):
        return set()
    return {(a, port) for a in (parse_address(r) for r in resolved) if a is not None}


def endpoint_pairs(urls: Iterable[str], resolver: Resolver | None = None) -> frozenset[tuple[Address, int]]:
    """(address, port) of each URL whose host is a literal address (or resolves, when ``resolver`` is given).

    Unparseable URLs are skipped: this describes endpoints the platform published, not input to refuse.
    """
    pairs: set[tuple[Address, int]] = set()
    for url in urls:
        try:
            _, host, port, _ = split_url(url)
        except AddressRefused:
            continue
        pairs |= _pairs(host, port, resolver)
    return frozenset(pairs)


def service_pairs(
    host_ports: Iterable[tuple[str, int]], resolver: Resolver = system_resolver
) -> frozenset[tuple[Address, int]]:
    """(address, port) of the platform's own listeners, names resolved (a name that does not resolve is skipped)."""
    pairs: set[tuple[Address, int]] = set()
    for host, port in host_ports:
        pairs |= _pairs(host, port, resolver)
    return frozenset(pairs)
