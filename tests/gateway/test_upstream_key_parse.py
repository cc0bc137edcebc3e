"""The gateway's side of an external deployment's upstream key, without processes: the parse of a snapshot section
(the key opens into the deployment, or is left out with a warning), the seal key's configuration and the embeddings
batch key. The end-to-end tests, the publisher's and the transports' are in ``test_upstream_key.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from controlplane.contracts.env import ImproperlyConfiguredEnv
from controlplane.contracts.sealing import Sealer, new_key
from controlplane.contracts.snapshot import upstream_key_context, upstream_key_problem
from gateway.config import GatewayConfig
from gateway.embeddings_upstream import embeddings_batch_key
from gateway.snapshot_index import parse_section
from tests.gateway.test_upstream_key import upstream_value

# --- the gateway's parse ----------------------------------------------------------------------------------------


def section_with(sealed: object, runtime: str = "external", name: str = "ext") -> dict[str, Any]:
    deployment = {
        "id": 7,
        "tenant": "acme",
        "name": name,
        "model": "gpt-upstream",
        "runtime": runtime,
        "state": "running",
        "min_replicas": 0,
        "max_replicas": 1,
        "max_concurrent_requests": None,
        "timeout_s": 30,
        "created": 0,
        "revisions": [{"id": 8, "name": "r1", "weight": 100, "endpoints": ["http://127.0.0.1:9"]}],
        "upstream_key": sealed,
    }
    return {"deployments": {f"acme/{name}": deployment}}


def test_it_opens_the_key_into_the_deployment_and_keeps_it_out_of_repr() -> None:
    sealer = Sealer.from_text(new_key())
    value = upstream_value()
    sealed = sealer.seal(value, upstream_key_context("acme", "ext"), deterministic=True)

    entry = parse_section(section_with(sealed), sealer).deployments[("acme", "ext")]

    assert entry.upstream_key == value
    assert value not in repr(entry)


@pytest.mark.parametrize(
    "case", ["no seal key", "another seal key", "another deployment's seal", "not a seal", "not a string"]
)
def test_it_leaves_out_a_key_that_does_not_open(case: str, caplog: pytest.LogCaptureFixture) -> None:
    sealer = Sealer.from_text(new_key())
    value = upstream_value()
    sealed: object = sealer.seal(value, upstream_key_context("acme", "ext"), deterministic=True)
    opener: Sealer | None = sealer
    if case == "no seal key":
        opener = None
    elif case == "another seal key":
        opener = Sealer.from_text(new_key())
    elif case == "another deployment's seal":
        sealed = sealer.seal(value, upstream_key_context("globex", "ext"), deterministic=True)
    elif case == "not a seal":
        sealed = value
    else:
        sealed = {"value": value}

    with caplog.at_level(logging.WARNING, logger="frontdoor.gateway.snapshot"):
        entry = parse_section(section_with(sealed), opener).deployments[("acme", "ext")]

    assert entry.upstream_key == ""
    assert "deployment acme/ext: upstream key left out" in caplog.text
    assert value not in caplog.text


def test_it_opens_no_key_for_a_deployment_the_platform_runs() -> None:
    sealer = Sealer.from_text(new_key())
    sealed = sealer.seal(upstream_value(), upstream_key_context("acme", "ext"), deterministic=True)

    entry = parse_section(section_with(sealed, runtime="builtin"), sealer).deployments[("acme", "ext")]

    assert entry.upstream_key == ""


@pytest.mark.parametrize("value", ["sk bad", "sk\r\nx-injected: 1", "sk-\x7f", "sk-é", ""])
def test_it_refuses_a_key_an_http_header_cannot_carry(value: str) -> None:
    sealer = Sealer.from_text(new_key())
    sealed = sealer.seal(value, upstream_key_context("acme", "ext"), deterministic=True)

    assert upstream_key_problem(value)
    assert parse_section(section_with(sealed), sealer).deployments[("acme", "ext")].upstream_key == ""


def test_a_key_of_visible_ascii_can_be_sent() -> None:
    assert upstream_key_problem("sk-proj_AZaz09.~+/=") == ""


# --- the configuration and the batch key ------------------------------------------------------------------------


def test_the_gateway_reads_its_seal_key_from_a_file_and_never_shows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_key()
    key_file = tmp_path / "seal.key"
    key_file.write_text(f"{key}\n")
    monkeypatch.delenv("FRONTDOOR_SEAL_KEY", raising=False)
    monkeypatch.setenv("FRONTDOOR_SEAL_KEY_FILE", str(key_file))

    config = GatewayConfig.from_env()

    assert config.sealer == Sealer.from_text(key)
    assert key not in repr(config)


def test_the_gateway_refuses_to_start_with_a_malformed_seal_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRONTDOOR_SEAL_KEY_FILE", raising=False)
    monkeypatch.setenv("FRONTDOOR_SEAL_KEY", "c2hvcnQta2V5")  # base64 of "short-key"

    with pytest.raises(ImproperlyConfiguredEnv, match="FRONTDOOR_SEAL_KEY"):
        GatewayConfig.from_env()


def test_the_gateway_starts_without_a_seal_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRONTDOOR_SEAL_KEY_FILE", raising=False)
    monkeypatch.delenv("FRONTDOOR_SEAL_KEY", raising=False)

    assert GatewayConfig.from_env().sealer is None


def test_embeddings_of_deployments_with_different_keys_are_never_batched_together() -> None:
    payload = {"model": "m", "input": ["x"]}
    endpoint = "https://api.example.test/v1"

    mine = embeddings_batch_key(endpoint, payload, True, "sk-a")
    theirs = embeddings_batch_key(endpoint, payload, True, "sk-b")

    assert mine != theirs
    assert mine.split("\x00", 3)[2] == "sk-a"
    assert embeddings_batch_key(endpoint, payload, False, "sk-a") == embeddings_batch_key(endpoint, payload)
