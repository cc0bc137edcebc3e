"""The drain rule (controlplane/contracts/drain.py): which gateways may still route to a replica left out of snapshot
version V, which endpoints a snapshot routes to, and how acknowledgements are read."""

from __future__ import annotations

from controlplane.contracts.drain import Ack, encode_ack, lagging_gateways, parse_acks, routed_endpoints, stale_gateways

TIMEOUT_S = 10.0
NOW = 1_000_000.0


def test_a_gateway_behind_the_version_holds_the_replica_until_it_catches_up() -> None:
    acks = {"a": Ack(version=7, ts=NOW - 1), "b": Ack(version=6, ts=NOW - 1)}
    assert lagging_gateways(acks, 7, unrouted_at=NOW - 2, now=NOW, ack_timeout_s=TIMEOUT_S) == ["b"]
    acks["b"] = Ack(version=8, ts=NOW)
    assert lagging_gateways(acks, 7, unrouted_at=NOW - 2, now=NOW, ack_timeout_s=TIMEOUT_S) == []


def test_a_gateway_silent_for_the_ack_timeout_is_gone() -> None:
    acks = {"paused": Ack(version=6, ts=NOW - TIMEOUT_S)}
    assert lagging_gateways(acks, 7, unrouted_at=NOW - 1, now=NOW, ack_timeout_s=TIMEOUT_S) == []


def test_a_gateway_that_keeps_lagging_is_waited_for_one_ack_timeout_after_the_version_appeared() -> None:
    acks = {"stuck": Ack(version=6, ts=NOW)}  # alive, refreshing, but never loading the new snapshot
    assert lagging_gateways(acks, 7, unrouted_at=NOW - TIMEOUT_S + 1, now=NOW, ack_timeout_s=TIMEOUT_S) == ["stuck"]
    assert lagging_gateways(acks, 7, unrouted_at=NOW - TIMEOUT_S, now=NOW, ack_timeout_s=TIMEOUT_S) == []


def test_no_gateway_means_nothing_to_wait_for() -> None:
    assert lagging_gateways({}, 7, unrouted_at=NOW, now=NOW, ack_timeout_s=TIMEOUT_S) == []


def test_a_snapshot_routes_to_the_endpoints_of_weighted_revisions_of_deployments_not_being_deleted() -> None:
    doc = {
        "deployments": {
            "acme/chat": {
                "state": "running",
                "revisions": [
                    {"weight": 80, "endpoints": ["http://127.0.0.1:1/", "http://127.0.0.1:2"]},
                    {"weight": 0, "endpoints": ["http://127.0.0.1:3"]},  # drained: gateways skip it
                ],
            },
            "acme/old": {"state": "deleting", "revisions": [{"weight": 100, "endpoints": ["http://127.0.0.1:4"]}]},
            "acme/stopped": {"state": "stopped", "revisions": [{"weight": 100, "endpoints": ["http://127.0.0.1:5"]}]},
        }
    }
    assert routed_endpoints(doc) == {"http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:5"}
    assert routed_endpoints({}) == frozenset()


def test_acknowledgements_round_trip_and_malformed_ones_are_skipped() -> None:
    raw = {b"gw-1": encode_ack(7, NOW), b"gw-2": b"not json", "gw-3": b'{"version": "x", "ts": 1}'}
    assert parse_acks(raw) == {"gw-1": Ack(7, NOW)}


def test_long_silent_acknowledgements_are_the_ones_to_remove() -> None:
    acks = {"old": Ack(1, NOW - 400), "fresh": Ack(1, NOW - 1)}
    assert list(stale_gateways(acks, NOW, 300)) == ["old"]
