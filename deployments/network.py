"""The platform's address policy, assembled from settings in this one place (``controlplane.contracts.addresses``).

Tenant-given URLs (external endpoints, SLO webhooks) may reach public addresses and the operator's
``FRONTDOOR_EXTERNAL_ALLOWED_NETWORKS``, never the platform's own listeners (Postgres, Redis, the Celery broker, the
gateway, the local agent's API, the web, ``FRONTDOOR_PLATFORM_ADDRESSES``) nor the replicas of other deployments.
The API checks endpoints with it when they are saved, the webhook sender before it connects, and the snapshot
carries it (``network_document``) to the gateway, which checks again at connect.

Names are resolved by ``resolve_host``, a module-level function tests replace so nothing is looked up for real.
The platform's listeners are resolved once per process and settings (re-resolved after ``_POLICY_TTL_S``, sooner
when a name did not resolve), so the snapshot publisher pays for no lookups.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from controlplane.contracts.addresses import (
    Address,
    AddressPolicy,
    AddressRefused,
    Resolver,
    Target,
    endpoint_pairs,
    parse_networks,
    service_pairs,
    split_url,
    system_resolver,
)

# A listener's address may move (a failover behind a name); an unresolved name is retried sooner.
_POLICY_TTL_S = 600.0
_RETRY_TTL_S = 30.0
_DEFAULT_PORTS = {"postgres": 5432, "postgresql": 5432, "redis": 6379, "rediss": 6379, "http": 80, "https": 443}

_lock = threading.Lock()
_cache: dict[tuple[Any, ...], tuple[float, AddressPolicy]] = {}


def resolve_host(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to; every check in this module resolves through here."""
    return system_resolver(host, port)


def _url_host_port(url: str) -> tuple[str, int] | None:
    """(host, port) of a service URL (postgres://, redis://, http://...); None for sockets and unparseable ones."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.scheme not in _DEFAULT_PORTS:
        return None
    return parts.hostname, port or _DEFAULT_PORTS[parts.scheme]


def _address_host_port(text: str) -> tuple[str, int] | None:
    try:
        _, host, port, _ = split_url(f"http://{text}")
    except AddressRefused:
        return None
    return host, port


def platform_host_ports() -> list[tuple[str, int]]:
    """The platform's own listeners as configured (host names not resolved yet)."""
    found: list[tuple[str, int] | None] = [
        _url_host_port(settings.DATABASE_URL),
        _url_host_port(settings.REDIS_URL),
        _url_host_port(settings.CELERY_BROKER_URL),
        _url_host_port(settings.FRONTDOOR_GATEWAY_URL),
        _address_host_port(settings.FRONTDOOR_WEB_ADDRESS),
        *(_address_host_port(text) for text in settings.FRONTDOOR_PLATFORM_ADDRESSES),
    ]
    if settings.FRONTDOOR_LOCAL_AGENT_PORT:  # 0: the agent's API is off
        found.append((settings.FRONTDOOR_LOCAL_AGENT_HOST, settings.FRONTDOOR_LOCAL_AGENT_PORT))
    return list(dict.fromkeys(pair for pair in found if pair is not None))


def _settings_key() -> tuple[Any, ...]:
    return (
        tuple(settings.FRONTDOOR_EXTERNAL_ALLOWED_NETWORKS),
        tuple(platform_host_ports()),
        resolve_host,  # a test that replaces the resolver gets a policy built with it
    )


def platform_policy() -> AddressPolicy:
    """The allowed networks and the platform's resolved listeners (no replicas: see ``endpoint_policy``)."""
    key = _settings_key()
    now = time.monotonic()
    with _lock:
        cached = _cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
    policy, complete = _build_policy(key[0], key[1], key[2])
    with _lock:
        _cache.clear()  # one entry: settings rarely change in a process (tests override them)
        _cache[key] = (now + (_POLICY_TTL_S if complete else _RETRY_TTL_S), policy)
    return policy


def _build_policy(
    networks: Iterable[str], host_ports: Iterable[tuple[str, int]], resolver: Resolver
) -> tuple[AddressPolicy, bool]:
    failed: list[str] = []

    def recording(host: str, port: int) -> list[str]:
        try:
            return resolver(host, port)
        except (OSError, UnicodeError):
            failed.append(host)
            raise

    services = service_pairs(host_ports, resolver=recording)
    return AddressPolicy(allowed_networks=parse_networks(networks), platform_services=services), not failed


def replica_pairs(excluding_deployment: int | None = None) -> frozenset[tuple[Address, int]]:
    """(address, port) of every replica the backends report (non-external revisions), but those of one deployment.

    Only endpoints spelled with an address count: resolving every replica's name (cluster DNS) on each save would
    cost a lookup per replica, and those names resolve to cluster addresses outside the public internet anyway.
    """
    from deployments.models import Revision, Runtime

    rows = Revision.unscoped_objects.exclude(deployment__runtime=Runtime.EXTERNAL).exclude(endpoints=[])
    if excluding_deployment is not None:
        rows = rows.exclude(deployment_id=excluding_deployment)
    urls = [str(url) for endpoints in rows.values_list("endpoints", flat=True) for url in endpoints or []]
    return endpoint_pairs(urls)


def endpoint_policy(deployment_id: int | None = None) -> AddressPolicy:
    """The policy for one deployment's URLs: the platform's, plus the replicas of every other deployment."""
    base = platform_policy()
    return AddressPolicy(base.allowed_networks, base.platform_services, replica_pairs(deployment_id))


def check_endpoint(url: str, policy: AddressPolicy) -> Target:
    """Check one URL against ``policy``, resolving through ``resolve_host``; raises ``AddressRefused``."""
    return policy.check_url(url, resolver=resolve_host)


def network_document() -> dict[str, Any]:
    """The snapshot's ``network`` section: what the gateway checks at connect (docs/contracts.md)."""
    policy = platform_policy()
    services = sorted((str(address), port) for address, port in policy.platform_services)
    return {
        "allowed_networks": [str(network) for network in policy.allowed_networks],
        "platform_services": [[address, port] for address, port in services],
    }
