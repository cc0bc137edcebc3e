"""The snapshot carries the address policy the gateway applies at connect (docs/contracts.md, "Config snapshot").

Names resolve through a counting table (``deployments.network.resolve_host`` replaced): nothing is looked up for
real, and the count shows the platform's listeners are resolved once, not on every build. Nothing connects to
the addresses configured here: these tests never commit, so nothing publishes to Redis.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from controlplane.contracts.addresses import AddressPolicy, AddressRefused, parse_address, parse_networks
from controlplane.snapshot.publisher import build_snapshot
from deployments import network

pytestmark = pytest.mark.django_db


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch, settings: Any) -> list[str]:
    """The platform as configured on a small cluster: names for Redis and the gateway, literals for the rest."""
    asked: list[str] = []
    table = {"redis.internal": ["10.9.0.7", "fd00::7"], "gateway.internal": ["10.9.0.8"]}

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        if host not in table:
            raise OSError(f"no such host {host}")
        return table[host]

    monkeypatch.setattr(network, "resolve_host", resolve)
    settings.FRONTDOOR_EXTERNAL_ALLOWED_NETWORKS = ["10.9.0.0/16", "127.0.0.0/8"]
    settings.DATABASE_URL = "postgres://frontdoor:pw@10.9.0.5/frontdoor"
    settings.REDIS_URL = "redis://redis.internal:6380/0"
    settings.CELERY_BROKER_URL = "redis://redis.internal:6380/1"
    settings.FRONTDOOR_GATEWAY_URL = "https://gateway.internal"
    settings.FRONTDOOR_WEB_ADDRESS = "127.0.0.1:8000"
    settings.FRONTDOOR_LOCAL_AGENT_HOST = "127.0.0.1"
    settings.FRONTDOOR_LOCAL_AGENT_PORT = 8002
    settings.FRONTDOOR_PLATFORM_ADDRESSES = ["[::1]:9090", "10.9.0.9:9100"]
    return asked


def test_the_snapshot_names_the_allowed_networks_and_the_platforms_resolved_services(lookups: list[str]) -> None:
    snapshot = build_snapshot()

    assert snapshot["network"] == {
        "allowed_networks": ["10.9.0.0/16", "127.0.0.0/8"],
        "platform_services": [
            ["10.9.0.5", 5432],
            ["10.9.0.7", 6380],
            ["10.9.0.8", 443],
            ["10.9.0.9", 9100],
            ["127.0.0.1", 8000],
            ["127.0.0.1", 8002],
            ["::1", 9090],
            ["fd00::7", 6380],
        ],
    }
    orjson.dumps(snapshot)  # JSON as it is


def test_a_policy_rebuilt_from_the_section_refuses_what_the_control_plane_refuses(lookups: list[str]) -> None:
    section = build_snapshot()["network"]
    services = frozenset(
        (address, port)
        for raw, port in section["platform_services"]
        if (address := parse_address(raw)) is not None
    )
    policy = AddressPolicy(parse_networks(section["allowed_networks"]), services)

    assert policy.check_url("http://10.9.0.100:8000/v1").address == "10.9.0.100"
    for url in ("http://10.9.0.7:6380/", "http://127.0.0.2:8002/", "http://[fd00::7]:6380/"):
        with pytest.raises(AddressRefused):
            policy.check_url(url)


def test_the_platforms_names_are_resolved_once_not_on_every_build(lookups: list[str]) -> None:
    for _ in range(3):
        build_snapshot()

    assert sorted(lookups) == ["gateway.internal", "redis.internal"]


def test_a_settings_change_is_seen_at_the_next_build(lookups: list[str], settings: Any) -> None:
    build_snapshot()
    settings.FRONTDOOR_EXTERNAL_ALLOWED_NETWORKS = []

    assert build_snapshot()["network"]["allowed_networks"] == []


def test_a_name_that_did_not_resolve_is_left_out_and_asked_again_after_the_retry_period(
    lookups: list[str], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.FRONTDOOR_PLATFORM_ADDRESSES = ["metrics.internal:9100"]
    monkeypatch.setattr(network, "_RETRY_TTL_S", 0.0)  # the retry period is over at once

    first = build_snapshot()["network"]["platform_services"]
    build_snapshot()

    assert not any(port == 9100 for _, port in first)
    assert lookups.count("metrics.internal") == 2
