"""Which transport carries an endpoint: the hand-written client for plain http, the library for the rest, or the
library for everything when the operator says so (``FRONTDOOR_GATEWAY_UPSTREAM_CLIENT=library``)."""

from __future__ import annotations

import pytest

from controlplane.contracts.addresses import AddressPolicy, parse_networks
from gateway.transport import Transports, UpstreamConnectError
from gateway.upstream import UpstreamPool
from gateway.upstream_library import LibraryTransport

LOOPBACK = AddressPolicy(allowed_networks=parse_networks(["127.0.0.0/8"]))


def transports(library_only: bool = False) -> Transports:
    return Transports(UpstreamPool(), LibraryTransport(resolve_names=True), LibraryTransport(), library_only)


def names(choice: Transports, chosen: object) -> str:
    return {id(choice.fast): "fast", id(choice.library): "library", id(choice.pinned_library): "pinned library"}[
        id(chosen)
    ]


@pytest.mark.parametrize(
    ("endpoint", "auto", "library_only"),
    [
        ("http://10.0.0.7:8000", "fast", "library"),
        ("http://replica-1.models.svc:8000", "fast", "library"),
        ("https://replica-1.models.svc:8443", "library", "library"),
    ],
)
def test_it_picks_the_transport_of_a_published_replica(endpoint: str, auto: str, library_only: str) -> None:
    for only, expected in ((False, auto), (True, library_only)):
        choice = transports(only)
        transport, destination = choice.for_replica(endpoint)
        assert names(choice, transport) == expected
        assert not destination.pinned


@pytest.mark.parametrize(
    ("url", "auto", "library_only"),
    [
        ("http://localhost:8000/openai", "fast", "pinned library"),
        ("https://localhost:8443", "pinned library", "pinned library"),
    ],
)
def test_it_picks_the_transport_of_a_checked_url(url: str, auto: str, library_only: str) -> None:
    target = LOOPBACK.check_url(url, resolver=lambda host, port: ["127.0.0.1"])
    for only, expected in ((False, auto), (True, library_only)):
        choice = transports(only)
        transport, destination = choice.for_target(target)
        assert names(choice, transport) == expected
        assert (destination.connect_host, destination.host, destination.pinned) == ("127.0.0.1", "localhost", True)


def test_it_sends_embeddings_batches_of_published_replicas_through_the_library() -> None:
    choice = transports()
    transport, destination = choice.library_for_replica("http://10.0.0.7:8000")
    assert transport is choice.library
    assert (destination.connect_host, destination.port, destination.authority) == ("10.0.0.7", 8000, "10.0.0.7:8000")


def test_it_parses_a_replica_url_once() -> None:
    choice = transports()
    assert choice.for_replica("http://10.0.0.7:8000") is choice.for_replica("http://10.0.0.7:8000")


@pytest.mark.parametrize("endpoint", ["ftp://10.0.0.7:21", "http://:8000", "http://10.0.0.7:port", "10.0.0.7:8000"])
def test_it_refuses_a_replica_url_no_transport_speaks(endpoint: str) -> None:
    with pytest.raises(UpstreamConnectError, match="unsupported upstream URL"):
        transports().for_replica(endpoint)
