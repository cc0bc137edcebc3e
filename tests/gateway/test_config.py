"""Gateway settings come from the environment, with the control plane's rules for the pepper."""

from __future__ import annotations

import pytest

from controlplane.contracts.env import ImproperlyConfiguredEnv
from gateway.config import DEV_KEY_PEPPER, GatewayConfig


def test_it_reads_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRONTDOOR_GATEWAY_MAX_BODY_BYTES", "2048")
    monkeypatch.setenv("FRONTDOOR_GATEWAY_FAIL_OPEN", "true")
    monkeypatch.setenv("FRONTDOOR_GATEWAY_EJECT_S", "2.5")
    config = GatewayConfig.from_env()
    assert (config.max_body_bytes, config.fail_open, config.eject_s) == (2048, True, 2.5)


def test_it_uses_the_control_planes_development_pepper_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRONTDOOR_KEY_PEPPER", raising=False)
    monkeypatch.delenv("FRONTDOOR_ENV", raising=False)
    assert GatewayConfig.from_env().key_pepper == DEV_KEY_PEPPER == "dev-insecure-api-key-pepper"


@pytest.mark.parametrize("pepper", [None, DEV_KEY_PEPPER, "short"])
def test_it_refuses_a_weak_pepper_in_production(monkeypatch: pytest.MonkeyPatch, pepper: str | None) -> None:
    monkeypatch.setenv("FRONTDOOR_ENV", "production")
    if pepper is None:
        monkeypatch.delenv("FRONTDOOR_KEY_PEPPER", raising=False)
    else:
        monkeypatch.setenv("FRONTDOOR_KEY_PEPPER", pepper)
    with pytest.raises(ImproperlyConfiguredEnv):
        GatewayConfig.from_env()


def test_it_refuses_a_bad_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRONTDOOR_GATEWAY_RETRIES", "many")
    with pytest.raises(ImproperlyConfiguredEnv):
        GatewayConfig.from_env()


def test_it_picks_the_upstream_client_per_endpoint_unless_told_to_use_the_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FRONTDOOR_GATEWAY_UPSTREAM_CLIENT", raising=False)
    assert GatewayConfig.from_env().upstream_client == "auto"
    monkeypatch.setenv("FRONTDOOR_GATEWAY_UPSTREAM_CLIENT", "library")
    assert GatewayConfig.from_env().upstream_client == "library"


def test_it_refuses_an_unknown_upstream_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRONTDOOR_GATEWAY_UPSTREAM_CLIENT", "curl")
    with pytest.raises(ImproperlyConfiguredEnv, match="FRONTDOOR_GATEWAY_UPSTREAM_CLIENT"):
        GatewayConfig.from_env()
