"""The snapshot's ``network`` section and runtimes become the gateway's address policy for external endpoints."""

from __future__ import annotations

import ipaddress
from typing import Any

from gateway.snapshot_index import parse_snapshot

OWN = frozenset({(ipaddress.ip_address("127.0.0.1"), 8001)})


def deployment(name: str, runtime: str, endpoints: list[str]) -> dict[str, Any]:
    return {
        "id": len(name),
        "tenant": "acme",
        "name": name,
        "model": "m",
        "runtime": runtime,
        "state": "running",
        "revisions": [{"id": 1, "name": "r1", "weight": 100, "endpoints": endpoints}],
    }


def snapshot_doc(**extra: Any) -> dict[str, Any]:
    return {
        "version": 3,
        "keys": {},
        "tenants": {},
        "deployments": {
            "acme/local": deployment("local", "builtin", ["http://127.0.0.1:40001", "http://replica.svc:8000"]),
            "acme/remote": deployment("remote", "external", ["https://api.example.com"]),
        },
        **extra,
    }


def test_it_marks_only_external_deployments_as_tenant_given() -> None:
    snap = parse_snapshot(snapshot_doc())
    local, remote = snap.deployments[("acme", "local")], snap.deployments[("acme", "remote")]
    assert (local.external, [r.tenant_given for r in local.revisions]) == (False, [False])
    assert (remote.external, [r.tenant_given for r in remote.revisions]) == (True, [True])


def test_it_reads_the_network_section_into_the_policy() -> None:
    network = {
        "allowed_networks": ["10.20.0.0/16", "not a network"],
        "platform_services": [["127.0.0.1", 6379], ["::1", 5432], ["redis.internal", 6379], ["127.0.0.1", "80"]],
    }
    policy = parse_snapshot(snapshot_doc(network=network), OWN).address_policy
    assert [str(n) for n in policy.allowed_networks] == ["10.20.0.0/16"]
    assert policy.platform_services == {
        (ipaddress.ip_address("127.0.0.1"), 6379),
        (ipaddress.ip_address("::1"), 5432),
        *OWN,
    }
    assert policy.refusal(ipaddress.ip_address("10.20.1.2"), 443) == ""


def test_it_refuses_the_replicas_the_platform_runs() -> None:
    policy = parse_snapshot(snapshot_doc(network={"allowed_networks": ["127.0.0.0/8"]})).address_policy
    assert policy.replicas == {(ipaddress.ip_address("127.0.0.1"), 40001)}
    assert "replica" in policy.refusal(ipaddress.ip_address("127.0.0.1"), 40001)
    assert policy.refusal(ipaddress.ip_address("127.0.0.1"), 40002) == ""


def test_it_allows_only_public_addresses_without_a_network_section() -> None:
    policy = parse_snapshot(snapshot_doc(), OWN).address_policy
    assert policy.allowed_networks == ()
    assert policy.platform_services == OWN
    assert "not a public address" in policy.refusal(ipaddress.ip_address("10.0.0.1"), 80)
    assert policy.refusal(ipaddress.ip_address("8.8.8.8"), 443) == ""


def test_it_refuses_a_6to4_address_that_embeds_a_private_one() -> None:
    policy = parse_snapshot(snapshot_doc(), OWN).address_policy
    assert "not a public address" in policy.refusal(ipaddress.ip_address("2002:7f00:1::1"), 80)  # 127.0.0.1
    assert "not a public address" in policy.refusal(ipaddress.ip_address("2002:a9fe:a9fe::1"), 80)  # metadata
    assert policy.refusal(ipaddress.ip_address("2002:808:808::1"), 443) == ""  # 8.8.8.8
