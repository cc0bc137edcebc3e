"""A listener on a loopback address is refused on every loopback spelling: one bound to all addresses (or to ``::``
dual-stack) answers on 127.0.0.2 and ::1 as well as on the 127.0.0.1 its URL names. Nothing here connects."""

from __future__ import annotations

import ipaddress

import pytest

from controlplane.contracts.addresses import AddressPolicy, AddressRefused, parse_networks

LOOPBACK = parse_networks(["127.0.0.0/8", "::1/128"])
POLICY = AddressPolicy(
    allowed_networks=LOOPBACK,
    platform_services=frozenset({(ipaddress.ip_address("127.0.0.1"), 6379), (ipaddress.ip_address("::1"), 5432)}),
    replicas=frozenset({(ipaddress.ip_address("127.0.0.1"), 41000)}),
)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.2:6379/", "platform's own services"),
        ("http://127.255.255.254:6379/", "platform's own services"),
        ("http://[::1]:6379/", "platform's own services"),
        ("http://[::ffff:127.0.0.9]:6379/", "platform's own services"),
        ("http://127.0.0.1:5432/", "platform's own services"),  # the service listens on ::1
        ("http://127.0.0.5:41000/", "replica of another deployment"),
        ("http://[::1]:41000/", "replica of another deployment"),
    ],
)
def test_every_loopback_spelling_of_a_listed_listener_is_refused(url: str, why: str) -> None:
    with pytest.raises(AddressRefused, match=why):
        POLICY.check_url(url)


def test_other_loopback_ports_stay_allowed() -> None:
    assert POLICY.check_url("http://127.0.0.2:6380/").address == "127.0.0.2"
    assert POLICY.check_url("http://[::1]:41001/").address == "::1"


def test_a_per_call_replica_set_gets_the_same_treatment() -> None:
    theirs = frozenset({(ipaddress.ip_address("::1"), 42000)})
    with pytest.raises(AddressRefused, match="replica of another deployment"):
        POLICY.check_url("http://127.0.0.3:42000/", replicas=theirs)
    assert POLICY.check_url("http://127.0.0.1:41000/", replicas=frozenset()).port == 41000
