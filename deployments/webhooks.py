"""An SSRF-safe webhook sender: tenants choose the URL, so the URL must never reach inside our network.

Rules: http or https only, no credentials in the URL; the host is resolved once and every address it resolves to
must be public (loopback, private, link-local and the metadata address 169.254.169.254, CGNAT 100.64/10,
multicast, reserved and unspecified addresses are refused); the connection goes to the address that was checked
(no second lookup an attacker's DNS could answer differently), with TLS still verified against the host name;
redirects are not followed; connect and read time out after a few seconds; the response body is not read.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

TIMEOUT_S = 3.0
USER_AGENT = "Frontdoor-Webhook/1"
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


class WebhookRefused(ValueError):
    """The URL is not a public http(s) target; the message says why."""


@dataclass(frozen=True)
class WebhookResult:
    delivered: bool
    status: int | None
    detail: str


def is_public_address(address: Address) -> bool:
    """True only for globally routable unicast addresses."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
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


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str  # the checked IP the connection goes to


def resolve_target(
    url: str, *, resolver: Resolver = system_resolver, allow: Callable[[Address], bool] = is_public_address
) -> Target:
    """Check ``url`` and pick the address to connect to; raises ``WebhookRefused``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookRefused(f"not a valid URL: {exc}") from exc
    if parts.scheme not in {"http", "https"}:
        raise WebhookRefused(f"only http and https webhooks are allowed, not {parts.scheme or 'no scheme'!r}")
    if parts.username or parts.password:
        raise WebhookRefused("credentials in the webhook URL are not allowed")
    host = parts.hostname
    if not host:
        raise WebhookRefused("the webhook URL has no host")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        literal = ipaddress.ip_address(host)
        addresses = [str(literal)]
    except ValueError:
        try:
            addresses = resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise WebhookRefused(f"{host!r} does not resolve: {exc}") from exc
    if not addresses:
        raise WebhookRefused(f"{host!r} does not resolve")
    # Every address must be public: a name resolving to one public and one private address is refused.
    for raw in addresses:
        address = ipaddress.ip_address(raw.split("%", 1)[0])
        if not allow(address):
            raise WebhookRefused(f"{host!r} resolves to {address}, which is not a public address")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, host, port, path, addresses[0])


def check_webhook_url(url: str, *, resolver: Resolver = system_resolver) -> str:
    """Refuse (``WebhookRefused``) a URL the sender would refuse now; used when a tenant saves its webhook.

    The same rules as at send time, so a URL pointing inside our network is a field error on save rather than a
    silent non-delivery later. Sending checks again: a name may resolve differently by then (DNS rebinding).
    """
    resolve_target(url, resolver=resolver)
    return url


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the checked address while sending the URL's host name."""

    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to the checked address, the certificate verified against the URL's host name."""

    def __init__(self, target: Target, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=context)
        self._address = target.address
        self._tls = context

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def send_webhook(
    url: str,
    payload: dict[str, Any],
    *,
    secret: str = "",
    timeout_s: float = TIMEOUT_S,
    resolver: Resolver = system_resolver,
    allow: Callable[[Address], bool] = is_public_address,
) -> WebhookResult:
    """POST ``payload`` as JSON. Refused targets raise ``WebhookRefused``; network failures return a result."""
    target = resolve_target(url, resolver=resolver, allow=allow)
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, "Content-Length": str(len(body))}
    if secret:
        headers["X-Frontdoor-Signature"] = sign(body, secret)
    connection: http.client.HTTPConnection = (
        _PinnedHTTPSConnection(target, timeout_s, ssl.create_default_context())
        if target.scheme == "https"
        else _PinnedHTTPConnection(target, timeout_s)
    )
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        response = connection.getresponse()
        status = response.status
    except (OSError, http.client.HTTPException) as exc:
        return WebhookResult(False, None, f"{type(exc).__name__}: {exc}")
    finally:
        connection.close()
    if 300 <= status < 400:
        return WebhookResult(False, status, "redirects are not followed")
    return WebhookResult(200 <= status < 300, status, response.reason)
