"""The sign-in page with single sign-on: its button, password sign-in turned off, the backend's checks, and the
sign-in and sign-out audit events. No provider runs here (tests/console/test_sso_flow.py has one)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.core.exceptions import SuspiciousOperation
from django.test import Client
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from tenants.invitations import create_invitation
from tenants.models import AuditEvent, Tenant
from tenants.sso.backend import SignInBackend
from tenants.sso.config import OidcSettings

Console = Callable[[User | None], Client]
PASSWORD = "correct horse battery"
CONFIG = OidcSettings(
    issuer="https://id.example.test", client_id="console", client_secret="s3cret", provider_name="Keycloak"
)


@pytest.fixture
def signer(db: None) -> User:
    return User.objects.create_user("signer", email="signer@example.test", password=PASSWORD)


@pytest.fixture
def sso(settings: Any) -> Iterator[OidcSettings]:
    settings.FRONTDOOR_OIDC = CONFIG
    settings.AUTHENTICATION_BACKENDS = ["tenants.sso.backend.SignInBackend"]
    yield CONFIG


@pytest.fixture
def password_off(settings: Any, sso: OidcSettings) -> None:
    settings.FRONTDOOR_PASSWORD_SIGN_IN = False


def test_without_an_issuer_the_page_is_the_password_form_and_the_flow_is_gone(console: Console) -> None:
    page = console(None).get("/login/").content.decode()
    assert 'name="password"' in page and "Sign in with" not in page
    assert console(None).get("/oidc/authenticate/").status_code == 404
    assert console(None).get("/oidc/callback/?code=c&state=s").status_code == 404


def test_with_an_issuer_the_page_offers_the_provider_and_keeps_next(console: Console, sso: OidcSettings) -> None:
    page = console(None).get("/login/?next=/t/acme/keys/").content.decode()
    assert 'href="/oidc/authenticate/?next=/t/acme/keys/">Sign in with Keycloak</a>' in page
    assert 'name="password"' in page


def test_password_sign_in_turned_off_hides_the_form_and_refuses_it(
    console: Console, signer: User, password_off: None
) -> None:
    client = console(None)
    page = client.get("/login/").content.decode()
    assert "Sign in with Keycloak" in page and 'name="password"' not in page
    refused = client.post("/login/", {"username": "signer", "password": PASSWORD})
    assert refused.status_code == 403 and "Password sign-in is turned off" in refused.content.decode()
    assert "_auth_user_id" not in client.session


def test_password_sign_in_turned_off_holds_for_the_admin_too(
    console: Console, signer: User, password_off: None
) -> None:
    User.objects.filter(pk=signer.pk).update(is_staff=True, is_superuser=True)
    client = console(None)
    client.post("/admin/login/", {"username": "signer", "password": PASSWORD})
    assert "_auth_user_id" not in client.session
    assert authenticate(None, username="signer", password=PASSWORD) is None


def test_passwords_still_work_beside_the_provider(console: Console, signer: User, sso: OidcSettings) -> None:
    client = console(None)
    assert client.post("/login/", {"username": "signer", "password": PASSWORD}).status_code == 302
    assert client.session["_auth_user_backend"] == "tenants.sso.backend.SignInBackend"
    assert client.get("/").status_code == 200  # a signed-in page, with the provider nowhere to be reached


def test_a_deactivated_accounts_session_stops_working(console: Console, signer: User, sso: OidcSettings) -> None:
    client = console(signer)
    assert client.get("/").status_code == 200
    User.objects.filter(pk=signer.pk).update(is_active=False)
    assert client.get("/")["Location"] == "/login/"


def test_the_invitation_sign_up_signs_in_with_the_one_backend(
    console: Console, sso: OidcSettings, acme: Tenant
) -> None:
    _, token = create_invitation(acme, email="new@example.test", role="member", invited_by=None, actor=None)
    client = console(None)
    password = "a long pass phrase 42"
    answer = client.post(f"/invite/{token}/", {"username": "newbie", "password": password, "password_again": password})
    assert (answer.status_code, answer["Location"]) == (302, "/t/acme/")


@pytest.mark.parametrize("with_sso", [False, True])
def test_password_sign_in_and_out_are_audited(console: Console, signer: User, settings: Any, with_sso: bool) -> None:
    if with_sso:
        settings.FRONTDOOR_OIDC = CONFIG
        settings.AUTHENTICATION_BACKENDS = ["tenants.sso.backend.SignInBackend"]
    client = console(None)
    client.post("/login/", {"username": "signer", "password": PASSWORD}, HTTP_X_REQUEST_ID="req-in")
    answer = client.post("/logout/", HTTP_X_REQUEST_ID="req-out")
    assert (answer.status_code, answer["Location"]) == (302, "/login/")  # never to a provider
    events = AuditEvent.objects.unscoped().order_by("id")
    assert [(e.action, e.actor_id, e.tenant_id, e.changes, e.request_id) for e in events] == [
        ("user.sign_in", signer.pk, None, {"method": "password"}, "req-in"),
        ("user.sign_out", signer.pk, None, {"method": "password"}, "req-out"),
    ]


def test_a_failed_password_sign_in_records_nothing(console: Console, signer: User) -> None:
    console(None).post("/login/", {"username": "signer", "password": "wrong"})
    assert not AuditEvent.objects.unscoped().exists()


@pytest.mark.parametrize(
    ("payload", "refusal"),
    [
        ({"iss": "https://elsewhere.test", "aud": "console"}, "issued by"),
        ({"iss": "https://id.example.test", "aud": "another-client"}, "another client"),
        ({"iss": "https://id.example.test", "aud": ["console", "other"], "azp": "other"}, "azp"),
    ],
)
def test_the_backend_refuses_an_id_token_for_another_issuer_or_client(
    sso: OidcSettings, monkeypatch: pytest.MonkeyPatch, payload: dict[str, Any], refusal: str
) -> None:
    # The library checked the signature, expiry and nonce; these are the checks it leaves to us.
    monkeypatch.setattr(OIDCAuthenticationBackend, "verify_token", lambda self, token, **kw: payload)
    with pytest.raises(SuspiciousOperation, match=refusal):
        SignInBackend().verify_token("token", nonce="n")


def test_the_backend_takes_an_id_token_for_this_client(sso: OidcSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = {"iss": "https://id.example.test", "aud": ["console", "other"], "azp": "console", "sub": "p-1"}
    monkeypatch.setattr(OIDCAuthenticationBackend, "verify_token", lambda self, token, **kw: payload)
    assert SignInBackend().verify_token("token", nonce="n") == payload


def test_the_backend_refuses_userinfo_about_someone_else(sso: OidcSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(OIDCAuthenticationBackend, "get_userinfo", lambda self, *args: {"sub": "someone-else"})
    with pytest.raises(SuspiciousOperation, match="someone else"):
        SignInBackend().get_userinfo("access", "id", {"sub": "p-1"})
