"""An SSRF-safe webhook sender: tenants choose the URL, so the URL must never reach inside our network.

The URL passes the platform's one address policy (``deployments.network``, built on
``controlplane.contracts.addresses``), as external endpoints do: http or https only, no credentials; the host is
resolved once and every address it resolves to must be public or in ``FRONTDOOR_EXTERNAL_ALLOWED_NETWORKS``, and
never one of the platform's own services or a deployment's replica. The connection goes to the address that was
checked (no second lookup an attacker's DNS could answer differently), with TLS still verified against the host
name; redirects are not followed; connect and read time out after a few seconds; the response body is not read.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from controlplane.contracts.addresses import AddressPolicy, AddressRefused, Resolver, Target, is_public_address
from deployments import network

__all__ = ["WebhookRefused", "WebhookResult", "check_webhook_url", "is_public_address", "send_webhook", "sign"]

TIMEOUT_S = 3.0
USER_AGENT = "Frontdoor-Webhook/1"


class WebhookRefused(AddressRefused):
    """The URL is not a target the address policy allows; the message says why."""


@dataclass(frozen=True)
class WebhookResult:
    delivered: bool
    status: int | None
    detail: str


def webhook_policy() -> AddressPolicy:
    """The platform's policy with every deployment's replicas refused (a webhook belongs to no deployment)."""
    return network.endpoint_policy(None)


def resolve_target(url: str, *, resolver: Resolver | None = None, policy: AddressPolicy | None = None) -> Target:
    """Check ``url`` and pick the address to connect to; raises ``WebhookRefused``.

    ``resolver`` defaults to ``deployments.network.resolve_host``, ``policy`` to ``webhook_policy()``.
    """
    try:
        return (policy or webhook_policy()).check_url(url, resolver=resolver or network.resolve_host)
    except AddressRefused as exc:
        raise WebhookRefused(str(exc)) from exc


def check_webhook_url(url: str, *, resolver: Resolver | None = None, policy: AddressPolicy | None = None) -> str:
    """Refuse (``WebhookRefused``) a URL the sender would refuse now; used when a tenant saves its webhook.

    The same rules as at send time, so a URL pointing inside our network is a field error on save rather than a
    silent non-delivery later. Sending checks again: a name may resolve differently by then (DNS rebinding).
    """
    resolve_target(url, resolver=resolver, policy=policy)
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
    resolver: Resolver | None = None,
    policy: AddressPolicy | None = None,
) -> WebhookResult:
    """POST ``payload`` as JSON. Refused targets raise ``WebhookRefused``; network failures return a result."""
    target = resolve_target(url, resolver=resolver, policy=policy)
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
