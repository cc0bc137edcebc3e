"""Tenant secrets on the local backend: sealed in the agent's Redis document, opened by the agent into the replica's
environment, left out when the key does not open them, and a rotation restarts the replica with the new value."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from controlplane.contracts import localagent as protocol
from controlplane.contracts.sealing import new_key
from deployments import secrets
from deployments.backends.base import DeploymentSpec, SecretValue
from deployments.backends.local import LocalBackend
from deployments.models import ModelDeployment
from deployments.reconcile import engine as reconcile
from localagent.procs import MARKER_ENV
from tenants.models import Tenant
from tests.support.localagent import Agent, agent_factory, deployment_spec, wait_until

VALUE = "hf_localSecretValueThatMustStayOutOfRedis"


def with_secret(spec: DeploymentSpec, value: str = VALUE, version: int = 1) -> DeploymentSpec:
    secret = SecretValue(name="hf-token", kind="generic", version=version, value=value)
    return replace(spec, tenant=replace(spec.tenant, secrets=(secret,)))


def secret_spec(deployment_id: int, value: str = VALUE, version: int = 1) -> DeploymentSpec:
    return with_secret(deployment_spec(deployment_id, 1, secret_env={"HF_TOKEN": "hf-token"}), value, version)


def stored_document(backend: LocalBackend, deployment_id: int) -> str:
    raw = backend.redis.hget(protocol.desired_key(backend.prefix), str(deployment_id))
    assert raw is not None
    return raw.decode()  # type: ignore[union-attr]


def replica_environments(state_dir: Path) -> dict[int, dict[str, str]]:
    """The environment of every process this agent started, by pid (read from /proc, as the kernel holds it)."""
    marker = f"{MARKER_ENV}={state_dir.resolve()}|".encode()
    found: dict[int, dict[str, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in raw:
            pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
            found[int(entry.name)] = {k.decode(): v.decode(errors="replace") for k, v in pairs}
    return found


@pytest.fixture
def make_agent(redis_url: str, redis_prefix: str, tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    with agent_factory(redis_url, redis_prefix, tmp_path) as make:
        yield make


def test_the_agents_document_holds_the_value_sealed_and_unchanged_bytes_for_an_unchanged_secret(
    redis_url: str, redis_prefix: str
) -> None:
    backend = LocalBackend(redis_url=redis_url, prefix=redis_prefix)

    first = backend.apply_deployment(secret_spec(71))
    again = backend.apply_deployment(secret_spec(71))
    stored = stored_document(backend, 71)
    rotated = backend.apply_deployment(secret_spec(71, value="hf_rotated", version=2))

    assert (first.writes, again.writes, rotated.writes) == (1, 0, 1)
    assert VALUE not in stored
    (revision,) = json.loads(stored)["revisions"]
    assert set(revision["sealed_env"]) == {"HF_TOKEN"}
    assert revision["sealed_env"]["HF_TOKEN"].startswith("fd1.")
    before = protocol.parse_desired(stored).revisions[0]
    after = protocol.parse_desired(stored_document(backend, 71)).revisions[0]
    # What identifies a running replica changes with the value, so the agent replaces it.
    assert before.spec_hash != after.spec_hash


def test_a_replica_gets_the_secret_variable_and_a_rotation_restarts_it_with_the_new_value(
    make_agent: Callable[..., Agent],
) -> None:
    agent = make_agent()
    agent.backend.apply_deployment(secret_spec(72))
    wait_until(lambda: agent.ready_endpoints(72, 721, 1), what="one ready replica")

    (first,) = wait_until(lambda: list(replica_environments(agent.state_dir).items()), what="the replica's process")
    assert first[1]["HF_TOKEN"] == VALUE

    agent.backend.apply_deployment(secret_spec(72, value="hf_rotated", version=2))

    def rotated() -> list[int]:
        return [
            pid for pid, env in replica_environments(agent.state_dir).items() if env.get("HF_TOKEN") == "hf_rotated"
        ]

    (new_pid,) = wait_until(rotated, what="a replica with the rotated value")
    assert new_pid != first[0]
    wait_until(lambda: agent.ready_endpoints(72, 721, 1), what="the new replica ready")
    log = (agent.state_dir / "agent.log").read_text()
    assert VALUE not in log and "hf_rotated" not in log


def test_an_agent_whose_key_does_not_open_the_value_starts_the_replica_without_it(
    make_agent: Callable[..., Agent],
) -> None:
    agent = make_agent(FRONTDOOR_SEAL_KEY=new_key())
    agent.backend.apply_deployment(secret_spec(73))
    wait_until(lambda: agent.ready_endpoints(73, 731, 1), what="one ready replica")

    (env,) = wait_until(lambda: list(replica_environments(agent.state_dir).values()), what="the replica's process")

    assert "HF_TOKEN" not in env
    log = (agent.state_dir / "agent.log").read_text()
    assert "HF_TOKEN is left out" in log
    assert VALUE not in log


@pytest.mark.django_db
def test_the_reconciler_opens_the_tenants_secret_and_seals_it_for_the_agent(
    acme: Tenant, make_deployment: Callable[..., ModelDeployment], redis_url: str, redis_prefix: str
) -> None:
    secrets.create_secret(acme, name="hf-token", value=VALUE, actor=None)
    deployment = make_deployment(acme, min_replicas=1, secret_env={"HF_TOKEN": "hf-token"})
    backend = LocalBackend(redis_url=redis_url, prefix=redis_prefix)

    reconcile.reconcile_deployment(deployment.pk, backend)

    stored = stored_document(backend, deployment.pk)
    assert VALUE not in stored
    (revision,) = protocol.parse_desired(stored).revisions
    context = protocol.secret_env_context("acme", deployment.pk, "HF_TOKEN")
    assert secrets.transport_sealer().unseal(revision.sealed_env["HF_TOKEN"], context) == VALUE  # type: ignore[union-attr]
