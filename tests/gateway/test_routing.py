"""Revision and replica choice: traffic weights, least outstanding of two random choices, ejection."""

from __future__ import annotations

from collections import Counter

import pytest

from gateway.routing import Balancer, NoReplica
from gateway.snapshot_index import parse_snapshot


def deployment(revisions: list[dict[str, object]]):  # type: ignore[no-untyped-def]
    doc = {
        "version": 1,
        "deployments": {
            "acme/chat": {
                "id": 1,
                "tenant": "acme",
                "name": "chat",
                "model": "m",
                "state": "running",
                "timeout_s": 10,
                "revisions": revisions,
            },
        },
    }
    return parse_snapshot(doc).deployments[("acme", "chat")]


def test_it_splits_traffic_by_revision_weight() -> None:
    dep = deployment(
        [
            {"id": 11, "weight": 80, "endpoints": ["http://a"]},
            {"id": 12, "weight": 20, "endpoints": ["http://b"]},
        ]
    )
    balancer = Balancer(eject_s=10)
    picks = Counter(balancer.pick(dep)[0].id for _ in range(5000))
    assert 0.75 < picks[11] / 5000 < 0.85
    assert picks[11] + picks[12] == 5000


def test_it_sends_everything_to_the_revisions_that_have_endpoints() -> None:
    dep = deployment(
        [
            {"id": 11, "weight": 80, "endpoints": []},
            {"id": 12, "weight": 20, "endpoints": ["http://b"]},
            {"id": 13, "weight": 0, "endpoints": ["http://c"]},
        ]
    )
    balancer = Balancer(eject_s=10)
    assert {balancer.pick(dep)[0].id for _ in range(200)} == {12}
    assert not dep.cold


def test_it_calls_a_deployment_without_routed_endpoints_cold() -> None:
    dep = deployment([{"id": 11, "weight": 100, "endpoints": []}, {"id": 12, "weight": 0, "endpoints": ["http://b"]}])
    assert dep.cold


def test_it_prefers_the_replica_with_fewer_outstanding_requests() -> None:
    dep = deployment([{"id": 11, "weight": 100, "endpoints": ["http://a", "http://b"]}])
    balancer = Balancer(eject_s=10)
    for _ in range(5):
        balancer.acquire("http://a")
    assert {balancer.pick(dep)[1] for _ in range(100)} == {"http://b"}


def test_it_skips_an_ejected_replica_until_its_time_is_up() -> None:
    dep = deployment([{"id": 11, "weight": 100, "endpoints": ["http://a", "http://b"]}])
    balancer = Balancer(eject_s=10)
    balancer.eject("http://a")
    assert {balancer.pick(dep)[1] for _ in range(100)} == {"http://b"}
    balancer.eject("http://b")
    with pytest.raises(NoReplica) as raised:
        balancer.pick(dep)
    assert raised.value.retry_after_s >= 1
    short = Balancer(eject_s=0)
    short.eject("http://a")
    assert "http://a" in {short.pick(dep)[1] for _ in range(100)}
