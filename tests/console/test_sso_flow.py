"""Sign-in through a real OpenID Connect provider (tests/oidc_provider, on 127.0.0.1), the console driven with
Django's test client and the provider's login page with ``requests``: the code flow with PKCE, staff and tenant roles
from groups, invitations, refusals and sign-out at the provider."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tenants.invitations import create_invitation
from tenants.models import AuditEvent, Invitation, Membership, Tenant
from tenants.sso.config import OidcSettings, TenantGrant
from tenants.sso.provider import forget_metadata
from tests.support.oidc_provider import (
    CLIENT_ID,
    CLIENT_SECRET,
    Account,
    RunningProvider,
    callback_url,
    client_for,
    require_provider,
    running_provider,
    through_provider,
)

Console = Callable[[User | None], Client]

DANA = Account("dana", "dana@example.test", groups=("platform-staff", "acme-admins"))
EVE = Account("eve", "Eve@Example.test")
IVY = Account("ivy", "ivy@example.test")
# Claims alice's address without the provider having verified it.
UMA = Account("uma", "alice@example.test", email_verified=False)


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProvider]:
    require_provider()
    clients = [client_for("http://testserver")]
    with running_provider(tmp_path_factory.mktemp("oidc"), clients, [DANA, EVE, IVY, UMA]) as running:
        yield running


@pytest.fixture
def sso(settings: pytest.FixtureRequest, provider: RunningProvider) -> Iterator[OidcSettings]:
    config = OidcSettings(
        issuer=provider.issuer,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        scopes="openid email profile groups",
        provider_name="Test provider",
        staff_groups=frozenset({"platform-staff"}),
        tenant_roles={"acme-admins": TenantGrant("acme", "admin")},
    )
    settings.FRONTDOOR_OIDC = config  # type: ignore[attr-defined]
    settings.AUTHENTICATION_BACKENDS = ["tenants.sso.backend.SignInBackend"]  # type: ignore[attr-defined]
    yield config
    forget_metadata()


def signed_in_user(client: Client) -> User | None:
    user_id = client.session.get("_auth_user_id")
    return User.objects.get(pk=user_id) if user_id else None


def shown_messages(client: Client) -> str:
    return client.get("/login/").content.decode()


def test_the_authorization_request_carries_pkce_state_and_nonce(console: Console, sso: OidcSettings) -> None:
    location = console(None).get("/oidc/authenticate/")["Location"]
    assert location.startswith(f"{sso.issuer}/auth?")
    query = {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}
    assert query["response_type"] == "code" and query["client_id"] == CLIENT_ID
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["state"] and query["nonce"] and query["scope"] == "openid email profile groups"
    assert query["redirect_uri"] == "http://testserver/oidc/callback/"


def test_a_verified_address_signs_in_and_gets_an_account(console: Console, sso: OidcSettings) -> None:
    client = console(None)
    answer = through_provider(client, EVE)
    assert (answer.status_code, answer["Location"]) == (302, "/")
    user = signed_in_user(client)
    assert user is not None and (user.username, user.email, user.is_staff) == ("eve@example.test",) * 2 + (False,)
    event = AuditEvent.objects.unscoped().get(action="user.sign_in")
    assert (event.actor_id, event.tenant_id, event.changes) == (user.pk, None, {"method": "oidc"})


def test_a_staff_group_signs_in_as_staff_and_a_tenant_group_as_its_role(
    console: Console, sso: OidcSettings, acme: Tenant
) -> None:
    client = console(None)
    through_provider(client, DANA)
    dana = signed_in_user(client)
    assert dana is not None and dana.is_staff
    assert Membership.objects.for_tenant(acme).get(user=dana).role == "admin"
    sign_in = AuditEvent.objects.unscoped().get(action="user.sign_in")
    claim_events = AuditEvent.objects.unscoped().filter(request_id=sign_in.request_id).exclude(pk=sign_in.pk)
    assert sorted(e.action for e in claim_events) == ["member.add", "user.change_staff"]
    assert client.get("/").headers["Location"].startswith("/staff/")


def test_an_invited_address_joins_when_it_signs_in(console: Console, sso: OidcSettings, globex: Tenant) -> None:
    _, token = create_invitation(globex, email="ivy@example.test", role="member", invited_by=None, actor=None)
    client = console(None)
    answer = through_provider(client, IVY, start=f"/oidc/authenticate/?next=/invite/{token}/")
    assert (answer.status_code, answer["Location"]) == (302, "/t/globex/")
    ivy = signed_in_user(client)
    assert ivy is not None and Membership.objects.for_tenant(globex).get(user=ivy).role == "member"
    assert Invitation.unscoped_objects.get().accepted_by == ivy
    assert "Welcome to Globex." in client.get("/t/globex/").content.decode()


def test_in_a_tenant_the_mapping_names_the_groups_decide_even_over_an_invitation(
    console: Console, sso: OidcSettings, acme: Tenant
) -> None:
    create_invitation(acme, email="ivy@example.test", role="member", invited_by=None, actor=None)
    client = console(None)
    through_provider(client, IVY)
    assert not Membership.objects.for_tenant(acme).exists()
    assert [e.action for e in AuditEvent.objects.for_tenant(acme).order_by("id")][-2:] == [
        "member.add",
        "member.remove",
    ]


def test_an_unverified_address_never_signs_in_as_its_account(console: Console, sso: OidcSettings, alice: User) -> None:
    client = console(None)
    answer = through_provider(client, UMA)
    assert (answer.status_code, answer["Location"]) == (302, "/login/")
    assert signed_in_user(client) is None
    assert "The provider has not verified alice@example.test" in shown_messages(client)
    assert list(User.objects.filter(email__iexact="alice@example.test")) == [alice]
    assert not AuditEvent.objects.unscoped().filter(action="user.sign_in").exists()


def test_a_stolen_callback_signs_in_no_one_but_its_own_browser(console: Console, sso: OidcSettings) -> None:
    victim, stranger = console(None), console(None)
    stolen = callback_url(victim, EVE)
    stranger.get("/oidc/authenticate/")  # a flow of its own: its session holds a state, not the victim's
    refused = stranger.get(stolen)
    assert (refused.status_code, refused["Location"]) == (302, "/login/")
    assert signed_in_user(stranger) is None
    assert "Sign-in through Test provider failed" in shown_messages(stranger)
    assert victim.get(stolen).status_code == 302 and signed_in_user(victim) is not None
    replayed = victim.get(stolen)  # the flow's state was used up
    assert (replayed.status_code, replayed["Location"]) == (302, "/login/")


def test_the_provider_refusing_the_flow_is_a_message(console: Console, sso: OidcSettings) -> None:
    client = console(None)
    answer = client.get("/oidc/callback/?error=access_denied&error_description=<b>phish</b>")
    assert (answer.status_code, answer["Location"]) == (302, "/login/")
    page = shown_messages(client)
    assert "Sign-in through Test provider did not complete." in page and "phish" not in page


def test_signing_out_goes_to_the_providers_end_session(console: Console, sso: OidcSettings) -> None:
    client = console(None)
    through_provider(client, EVE)
    id_token = client.session["oidc_id_token"]
    answer = client.post("/logout/")
    assert answer.status_code == 302
    location = urlsplit(answer["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{sso.issuer}/session/end"
    assert parse_qs(location.query) == {
        "id_token_hint": [id_token],
        "client_id": [CLIENT_ID],
        "post_logout_redirect_uri": ["http://testserver/login/"],
    }
    assert signed_in_user(client) is None
    assert AuditEvent.objects.unscoped().get(action="user.sign_out").changes == {"method": "oidc"}


def test_a_provider_that_cannot_be_reached_is_a_message(console: Console, sso: OidcSettings, settings: object) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    settings.FRONTDOOR_OIDC = replace(sso, issuer=f"http://127.0.0.1:{port}")  # type: ignore[attr-defined]
    client = console(None)
    answer = client.get("/oidc/authenticate/")
    assert (answer.status_code, answer["Location"]) == (302, "/login/")
    assert "Test provider cannot be reached" in shown_messages(client)


def test_a_discovery_document_of_another_issuer_is_refused(
    console: Console, sso: OidcSettings, settings: object
) -> None:
    # The same provider under another name: its document names its own issuer, not this one.
    other_name = sso.issuer.replace("127.0.0.1", "localhost")
    settings.FRONTDOOR_OIDC = replace(sso, issuer=other_name)  # type: ignore[attr-defined]
    answer = console(None).get("/oidc/authenticate/")
    assert (answer.status_code, answer["Location"]) == (302, "/login/")
