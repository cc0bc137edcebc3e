"""The one address policy: every spelling of an inside address is refused before any connection is made.

Nothing here connects anywhere; names resolve through an injected resolver or /etc/hosts (``localhost``).
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.contracts.addresses import (
    AddressPolicy,
    AddressRefused,
    endpoint_pairs,
    is_public_address,
    parse_address,
    parse_networks,
    service_pairs,
)
from tests.support.network import loopback_only

PUBLIC = "93.184.215.14"  # a documentation-free public address; never contacted


def resolver_for(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"no such host {host}")
        return table[host]

    return resolve


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379/",
        "http://127.1/",
        "http://2130706433/",  # decimal
        "http://0177.0.0.1/",  # octal
        "http://0x7f.0.0.1/",  # hex
        "http://[::1]:8002/",
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped IPv6
        "http://[::ffff:169.254.169.254]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://10.0.0.5/",
        "http://172.16.3.4/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",  # CGNAT
        "http://224.0.0.1/",  # multicast
        "http://0.0.0.0/",
        "http://[::]/",
        "http://240.0.0.1/",  # reserved
        "http://[fe80::1%25eth0]/",
        "http://localhost:8000/",  # /etc/hosts
    ],
)
def test_it_refuses_every_spelling_of_an_inside_address(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with loopback_only(monkeypatch) as attempts, pytest.raises(AddressRefused, match="not a public address"):
        AddressPolicy().check_url(url)
    assert attempts == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://[::1", "not a valid URL"),
        ("http://a:99999", "not a valid URL"),
        ("http://a:0/", "outside 1-65535"),
        ("ftp://example.org/", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("gopher://example.org:6379/", "only http and https"),
        ("http://user:pw@example.org/", "credentials"),
        ("http:///nohost", "no host"),
        ("http://exa mple.org/", "spaces"),
        ("http://example.org\\@127.0.0.1/", "backslashes"),
        ("", "give an http"),
    ],
)
def test_it_refuses_urls_that_do_not_parse_or_are_not_http(url: str, message: str) -> None:
    with pytest.raises(AddressRefused, match=message):
        AddressPolicy().check_url(url, resolver=resolver_for({"example.org": [PUBLIC]}))


def test_it_accepts_a_public_address_and_connects_to_the_checked_one() -> None:
    target = AddressPolicy().check_url(
        "https://api.example.org/v1", resolver=resolver_for({"api.example.org": [PUBLIC]})
    )
    assert (target.scheme, target.host, target.port, target.path, target.address) == (
        "https",
        "api.example.org",
        443,
        "/v1",
        PUBLIC,
    )


def test_it_refuses_a_name_when_any_of_its_addresses_is_inside() -> None:
    resolve = resolver_for({"mixed.example": [PUBLIC, "10.1.2.3"]})
    with pytest.raises(AddressRefused, match=r"10\.1\.2\.3"):
        AddressPolicy().check_url("http://mixed.example/", resolver=resolve)


def test_it_refuses_a_name_that_does_not_resolve() -> None:
    with pytest.raises(AddressRefused, match="does not resolve"):
        AddressPolicy().check_url("http://nowhere.example/", resolver=resolver_for({}))


def test_an_allowed_network_admits_its_addresses_but_never_the_platform_or_other_replicas() -> None:
    loopback = ipaddress.ip_address("127.0.0.1")
    policy = AddressPolicy(
        allowed_networks=parse_networks(["127.0.0.0/8"]),
        platform_services=frozenset({(loopback, 6379), (ipaddress.ip_address("0.0.0.0"), 8000)}),
        replicas=frozenset({(loopback, 41000)}),
    )
    assert policy.check_url("http://127.0.0.1:40999/").address == "127.0.0.1"
    with pytest.raises(AddressRefused, match="platform's own services"):
        policy.check_url("http://127.0.0.1:6379/")
    with pytest.raises(AddressRefused, match="platform's own"):
        policy.check_url("http://127.0.0.2:8000/")  # the web listens on every address
    with pytest.raises(AddressRefused, match="replica of another deployment"):
        policy.check_url("http://127.0.0.1:41000/")
    with pytest.raises(AddressRefused, match="replica of another deployment"):
        policy.check_url("http://[::ffff:127.0.0.1]:41000/")
    with pytest.raises(AddressRefused, match="not a public address"):
        policy.check_url("http://10.0.0.1:41000/")  # outside the allowed network


def test_service_and_endpoint_pairs_resolve_names_to_addresses() -> None:
    resolve = resolver_for({"redis.internal": ["10.9.8.7", "::ffff:10.9.8.6"]})
    assert service_pairs([("redis.internal", 6379), ("127.0.0.1", 5432)], resolver=resolve) == {
        (ipaddress.ip_address("10.9.8.7"), 6379),
        (ipaddress.ip_address("10.9.8.6"), 6379),
        (ipaddress.ip_address("127.0.0.1"), 5432),
    }
    assert endpoint_pairs(["http://127.0.0.1:9000", "not a url", "http://name:1"]) == {
        (ipaddress.ip_address("127.0.0.1"), 9000)
    }


def test_bad_networks_are_named() -> None:
    with pytest.raises(ValueError, match=r"10\.0\.0\.0/33"):
        parse_networks(["10.0.0.0/33"])


@given(st.ip_addresses())
def test_every_address_the_policy_accepts_by_default_is_public(address: ipaddress.IPv4Address) -> None:
    host = f"[{address}]" if address.version == 6 else str(address)
    try:
        target = AddressPolicy().check_url(f"http://{host}:80/")
    except AddressRefused:
        assert not is_public_address(address)
    else:
        checked = parse_address(target.address)
        assert checked is not None and is_public_address(checked)


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_decimal_spellings_are_judged_like_dotted_ones(number: int) -> None:
    dotted = ipaddress.IPv4Address(number)
    assert parse_address(str(number)) == dotted
    policy = AddressPolicy()
    outcomes = []
    for host in (str(number), str(dotted), hex(number)):
        try:
            policy.check_url(f"http://{host}/")
            outcomes.append(True)
        except AddressRefused:
            outcomes.append(False)
    assert len(set(outcomes)) == 1
