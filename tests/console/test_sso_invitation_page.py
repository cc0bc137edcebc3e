"""The invitation page with single sign-on: the provider offered to an invitee without an account, and with password
sign-in turned off no password account can be made there (it would get round the switch)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tenants.invitations import create_invitation
from tenants.models import Membership, Tenant
from tenants.sso.config import OidcSettings

Console = Callable[[User | None], Client]
CONFIG = OidcSettings(
    issuer="https://id.example.test", client_id="console", client_secret="s3cret", provider_name="Keycloak"
)


@pytest.fixture
def sso(settings: Any) -> Iterator[OidcSettings]:
    settings.FRONTDOOR_OIDC = CONFIG
    settings.AUTHENTICATION_BACKENDS = ["tenants.sso.backend.SignInBackend"]
    yield CONFIG


@pytest.fixture
def link(acme: Tenant) -> str:
    _, token = create_invitation(acme, email="new@example.test", role="member", invited_by=None, actor=None)
    return f"/invite/{token}/"


def test_the_invitee_is_offered_the_provider_beside_the_sign_up(console: Console, sso: OidcSettings, link: str) -> None:
    page = console(None).get(link).content.decode()
    assert f'href="/oidc/authenticate/?next={link}">Sign in with Keycloak to join</a>' in page
    assert 'name="password"' in page  # password sign-in is still on


def test_with_password_sign_in_off_the_page_makes_no_password_account(
    console: Console, sso: OidcSettings, link: str, settings: Any, acme: Tenant
) -> None:
    settings.FRONTDOOR_PASSWORD_SIGN_IN = False
    page = console(None).get(link).content.decode()
    assert "Sign in with Keycloak to join" in page
    assert 'name="password"' not in page
    answer = console(None).post(link, {"username": "newbie", "password": "a long enough passphrase 42"})
    assert answer.status_code == 403
    assert not User.objects.filter(username="newbie").exists()
    assert not Membership.objects.for_tenant(acme).filter(user__email="new@example.test").exists()
