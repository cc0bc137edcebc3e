"""Single sign-on in a real browser against a real OpenID Connect provider (tests/oidc_provider, npm
``oidc-provider`` on 127.0.0.1): its own login page, a staff group, an invitation, a refused unverified address,
and sign-out that ends the provider's session too (RP-initiated logout)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User

from tenants.invitations import create_invitation
from tenants.models import AuditEvent, Membership, Tenant
from tenants.sso.config import OidcSettings
from tenants.sso.provider import forget_metadata
from tests.support.oidc_provider import (
    CLIENT_ID,
    CLIENT_SECRET,
    Account,
    RunningProvider,
    client_for,
    require_provider,
    running_provider,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page, Route

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DANA = Account("dana", "dana@example.test", groups=("platform-staff",))
IVY = Account("ivy", "ivy@example.test")
UMA = Account("uma", "alice@example.test", email_verified=False)
LOOPBACK = {"127.0.0.1", "localhost"}


@pytest.fixture(scope="module")
def provider(live_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProvider]:
    require_provider()
    clients = [client_for(str(live_server.url))]
    with running_provider(tmp_path_factory.mktemp("oidc"), clients, [DANA, IVY, UMA]) as running:
        yield running


@pytest.fixture
def sso(settings: Any, provider: RunningProvider, console_url: str) -> Iterator[OidcSettings]:
    settings.FRONTDOOR_OIDC = OidcSettings(
        issuer=provider.issuer,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        scopes="openid email profile groups",
        provider_name="Test provider",
        staff_groups=frozenset({"platform-staff"}),
    )
    settings.AUTHENTICATION_BACKENDS = ["tenants.sso.backend.SignInBackend"]
    yield settings.FRONTDOOR_OIDC
    forget_metadata()


@pytest.fixture
def browser_page(page: Page) -> Iterator[Page]:
    """The page, with every request off the loopback refused and remembered (there must be none)."""
    elsewhere: list[str] = []

    def only_loopback(route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOOPBACK:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_loopback)
    yield page
    assert elsewhere == []


def sign_in_at_provider(page: Page, account: Account) -> None:
    """From the console's sign-in page, through the provider's login page, back to the console."""
    page.get_by_role("link", name="Sign in with Test provider").click()
    page.wait_for_selector("text=Test provider: sign in")
    page.get_by_label("Login").fill(account.login)
    page.get_by_label("Password").fill(account.password)
    page.get_by_role("button", name="Continue").click()


def test_a_staff_group_signs_in_at_the_provider_and_signs_out_there_too(
    browser_page: Page, console_url: str, sso: OidcSettings
) -> None:
    page = browser_page
    page.goto(f"{console_url}/login/")
    sign_in_at_provider(page, DANA)
    page.wait_for_url(f"{console_url}/staff/**")
    assert page.get_by_role("button", name="Sign out").is_visible()
    assert User.objects.get(email="dana@example.test").is_staff

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_selector("text=Test provider: sign out")
    assert page.url.startswith(f"{sso.issuer}/session/end")
    page.get_by_role("button", name="Yes, sign me out").click()
    page.wait_for_url(f"{console_url}/login/")
    assert [e.action for e in AuditEvent.objects.unscoped().filter(action__startswith="user.sign")] == [
        "user.sign_out",
        "user.sign_in",
    ]

    # The provider's session ended with the console's: signing in again asks for the password again.
    page.get_by_role("link", name="Sign in with Test provider").click()
    page.wait_for_selector("text=Test provider: sign in")


def test_an_invited_person_joins_by_signing_in_at_the_provider(
    browser_page: Page, console_url: str, sso: OidcSettings, globex: Tenant
) -> None:
    page = browser_page
    _, token = create_invitation(globex, email="ivy@example.test", role="viewer", invited_by=None, actor=None)
    page.goto(f"{console_url}/login/?next=/invite/{token}/")
    sign_in_at_provider(page, IVY)
    page.wait_for_url(f"{console_url}/t/globex/")
    page.wait_for_selector("text=Welcome to Globex.")
    assert Membership.objects.for_tenant(globex).get(user__email="ivy@example.test").role == "viewer"


def test_an_address_the_provider_did_not_verify_is_refused(
    browser_page: Page, console_url: str, sso: OidcSettings, alice: User
) -> None:
    page = browser_page
    page.goto(f"{console_url}/login/")
    sign_in_at_provider(page, UMA)
    page.wait_for_url(f"{console_url}/login/")
    page.wait_for_selector("text=The provider has not verified alice@example.test")
    assert page.get_by_role("button", name="Sign out").count() == 0
    assert list(User.objects.filter(email__iexact="alice@example.test")) == [alice]
