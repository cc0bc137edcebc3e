"""The single sign-on settings: off without an issuer, every bad value refused with its variable's name."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from controlplane.contracts.env import ImproperlyConfiguredEnv
from tenants.models import Role
from tenants.sso.config import ROLES, TenantGrant, read_oidc_settings, read_password_sign_in

BASE = {
    "FRONTDOOR_OIDC_ISSUER": "https://id.example.test/realms/frontdoor",
    "FRONTDOOR_OIDC_CLIENT_ID": "console",
    "FRONTDOOR_OIDC_CLIENT_SECRET": "s3cret",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("FRONTDOOR_OIDC_") or name == "FRONTDOOR_PASSWORD_SIGN_IN":
            monkeypatch.delenv(name)
    for name, value in BASE.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_it_is_off_without_an_issuer(env: pytest.MonkeyPatch) -> None:
    env.delenv("FRONTDOOR_OIDC_ISSUER")
    assert read_oidc_settings(production=True) is None
    assert read_password_sign_in(None) is True


def test_it_reads_every_variable(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file\n")
    env.delenv("FRONTDOOR_OIDC_CLIENT_SECRET")
    env.setenv("FRONTDOOR_OIDC_CLIENT_SECRET_FILE", str(secret_file))
    env.setenv("FRONTDOOR_OIDC_SCOPES", "openid  email groups")
    env.setenv("FRONTDOOR_OIDC_PROVIDER_NAME", "Keycloak")
    env.setenv("FRONTDOOR_OIDC_TOKEN_AUTH", "client_secret_post")
    env.setenv("FRONTDOOR_OIDC_GROUPS_CLAIM", "realm_access.roles")
    env.setenv("FRONTDOOR_OIDC_STAFF_GROUPS", "platform-staff, sre")
    env.setenv("FRONTDOOR_OIDC_TENANT_ROLES", json.dumps({"acme-admins": ["acme", "admin"]}))
    env.setenv("FRONTDOOR_OIDC_CREATE_USERS", "false")
    env.setenv("FRONTDOOR_OIDC_TIMEOUT_S", "3")
    config = read_oidc_settings(production=True)
    assert config is not None
    assert (config.client_secret, config.scopes, config.provider_name) == (
        "from-a-file",
        "openid email groups",
        "Keycloak",
    )
    assert (config.token_auth_method, config.groups_claim) == ("client_secret_post", "realm_access.roles")
    assert config.staff_groups == {"platform-staff", "sre"}
    assert config.tenant_roles == {"acme-admins": TenantGrant("acme", "admin")}
    assert (config.create_users, config.timeout_s, config.sign_algorithm) == (False, 3.0, "RS256")


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("FRONTDOOR_OIDC_CLIENT_SECRET", "", "FRONTDOOR_OIDC_CLIENT_SECRET"),
        ("FRONTDOOR_OIDC_ISSUER", "id.example.test", "not an issuer URL"),
        ("FRONTDOOR_OIDC_ISSUER", "http://id.example.test", "https:// URL in production"),
        ("FRONTDOOR_OIDC_SCOPES", "openid profile", "must include 'openid' and 'email'"),
        ("FRONTDOOR_OIDC_TOKEN_AUTH", "private_key_jwt", "FRONTDOOR_OIDC_TOKEN_AUTH"),
        ("FRONTDOOR_OIDC_SIGN_ALGORITHM", "none", "FRONTDOOR_OIDC_SIGN_ALGORITHM"),
        ("FRONTDOOR_OIDC_GROUPS_CLAIM", "realm_access.", "no claim name"),
        ("FRONTDOOR_OIDC_TIMEOUT_S", "0", "FRONTDOOR_OIDC_TIMEOUT_S"),
        ("FRONTDOOR_OIDC_TENANT_ROLES", "[]", "JSON object"),
        ("FRONTDOOR_OIDC_TENANT_ROLES", '{"g": "acme"}', "[tenant, role]"),
        ("FRONTDOOR_OIDC_TENANT_ROLES", '{"g": ["Acme Corp", "admin"]}', "no tenant slug"),
        ("FRONTDOOR_OIDC_TENANT_ROLES", '{"g": ["acme", "root"]}', "use one of viewer, member, admin, owner"),
        ("FRONTDOOR_OIDC_TENANT_ROLES", "{not json", "is not JSON"),
        ("FRONTDOOR_OIDC_CREATE_USERS", "maybe", "not a boolean"),
    ],
)
def test_it_refuses_a_bad_value_naming_its_variable(
    env: pytest.MonkeyPatch, name: str, value: str, complaint: str
) -> None:
    env.setenv(name, value)
    with pytest.raises(ImproperlyConfiguredEnv, match=re.escape(complaint)):
        read_oidc_settings(production=True)


def test_it_takes_a_plain_http_issuer_in_development(env: pytest.MonkeyPatch) -> None:
    env.setenv("FRONTDOOR_OIDC_ISSUER", "http://127.0.0.1:9000")
    config = read_oidc_settings(production=False)
    assert config is not None and config.issuer == "http://127.0.0.1:9000"


def test_password_sign_in_can_be_turned_off_only_with_single_sign_on(env: pytest.MonkeyPatch) -> None:
    env.setenv("FRONTDOOR_PASSWORD_SIGN_IN", "false")
    assert read_password_sign_in(read_oidc_settings(production=True)) is False
    with pytest.raises(ImproperlyConfiguredEnv, match="needs FRONTDOOR_OIDC_ISSUER"):
        read_password_sign_in(None)


def test_its_roles_are_the_tenant_roles() -> None:
    assert list(ROLES) == list(Role.values)
