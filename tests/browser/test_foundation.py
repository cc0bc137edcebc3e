"""What every console page shares, in a real browser: dark mode from the system setting, htmx forms that never fail
silently (field errors swapped in with focus on the first bad field, a notice for a 5xx or no answer, a success
message once where the action happened), branded error pages, and tables that never scroll a phone's page."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import User

from deployments import secrets
from deployments.models import TenantSecret
from tenants.models import Membership, Tenant
from tests.support.browser import DESKTOP, PHONE

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SECRETS = "/t/acme/secrets/"
# WCAG contrast of two computed "rgb(r, g, b)" colours, computed in the page.
CONTRAST_JS = """([a, b]) => {
  const lum = (css) => {
    const [r, g, b] = css.match(/\\d+/g).slice(0, 3).map((v) => {
      const c = Number(v) / 255;
      return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const [hi, lo] = [lum(a), lum(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}"""


@pytest.fixture
def dark_page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(
        viewport={"width": DESKTOP["width"], "height": DESKTOP["height"]}, color_scheme="dark"
    )
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


@pytest.fixture
def hf_token(acme: Tenant) -> TenantSecret:
    return secrets.create_secret(acme, name="hf-token", value="hf_first-value", actor=None)


def computed(page: Page, selector: str, prop: str) -> str:
    return str(page.eval_on_selector(selector, f"(el) => getComputedStyle(el).{prop}"))


def open_rotate_form(page: Page, console_url: str) -> None:
    page.goto(console_url + SECRETS)
    page.locator("#secret-table summary", has_text="Rotate").click()


def test_it_follows_the_systems_dark_mode(page: Page, dark_page: Page, console_url: str) -> None:
    page.goto(f"{console_url}/login/")
    dark_page.goto(f"{console_url}/login/")

    assert computed(page, "body", "backgroundColor") == "rgb(246, 247, 249)"
    assert computed(dark_page, "body", "backgroundColor") == "rgb(13, 17, 23)"
    assert computed(dark_page, ".card", "backgroundColor") == "rgb(22, 27, 34)"
    assert computed(dark_page, "input[name=username]", "backgroundColor") == "rgb(13, 17, 23)"
    for fg, bg in [
        (("body", "color"), ("body", "backgroundColor")),
        (("h1", "color"), (".card", "backgroundColor")),
        (("button.primary", "color"), ("button.primary", "backgroundColor")),
        (("input[name=username]", "color"), ("input[name=username]", "backgroundColor")),
    ]:
        ratio = dark_page.evaluate(CONTRAST_JS, [computed(dark_page, *fg), computed(dark_page, *bg)])
        assert ratio >= 4.5, f"{fg} on {bg} in dark mode: {ratio:.2f}:1"


def test_an_htmx_form_shows_its_errors_with_focus_then_its_success_message_once(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, adam: User, hf_token: TenantSecret
) -> None:
    sign_in(page, adam)
    open_rotate_form(page, console_url)

    # Refused (422): the table is swapped in place with the errors; focus lands on the bad field.
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="Save hf-token").click()
    assert answer.value.status == 422
    summary = page.locator("#secret-table [data-error-summary]")
    summary.wait_for()
    assert summary.get_attribute("role") == "alert"
    assert "New value: enter the new value" in summary.inner_text()
    assert page.locator("#id_rotate_hf-token_value").get_attribute("aria-invalid") == "true"
    # Focus moves once htmx has settled the swap, a moment after the summary is in the page.
    page.wait_for_function("document.activeElement && document.activeElement.id === 'id_rotate_hf-token_value'")
    assert page.url == console_url + SECRETS  # no navigation

    # Saved: the message shows above the table it concerns, once, and is not carried to the next page.
    page.locator("#id_rotate_hf-token_value").fill("hf_second-value")
    page.get_by_role("button", name="Save hf-token").click()
    flash = page.locator("#secret-table").locator("xpath=preceding-sibling::*[1][@data-flash]")
    flash.get_by_text("Secret hf-token is at version 2").wait_for()
    assert flash.get_by_role("status").count() == 1
    assert page.locator("#secret-table [data-error-summary]").count() == 0
    page.goto(f"{console_url}/t/acme/members/")
    assert page.get_by_text("is at version 2").count() == 0


def test_a_server_error_or_no_answer_shows_a_notice_where_the_form_is(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, adam: User, hf_token: TenantSecret
) -> None:
    sign_in(page, adam)
    open_rotate_form(page, console_url)
    page.locator("#id_rotate_hf-token_value").fill("hf_second-value")

    def fail(route: Route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        route.fulfill(status=500, body="<!doctype html><h1>boom</h1>", headers={"x-request-id": "req-abc"})

    page.route("**" + SECRETS, fail)
    page.get_by_role("button", name="Save hf-token").click()
    notice = page.locator("[data-flash] [role=alert]")
    notice.filter(has_text="could not finish this (error 500)").wait_for()
    assert "Request id: req-abc." in notice.inner_text()
    assert page.locator("text=boom").count() == 0  # the failed answer is not swapped in

    page.unroute("**" + SECRETS)
    page.route("**" + SECRETS, lambda route: route.abort() if route.request.method == "POST" else route.continue_())
    page.get_by_role("button", name="Save hf-token").click()
    page.locator("[data-flash] [role=alert]", has_text="No answer from the console").wait_for()
    assert page.locator("[data-flash] [role=alert]").count() == 1  # the new notice replaced the old one
    hf_token.refresh_from_db()
    assert hf_token.version == 1


def test_error_pages_are_the_consoles_own(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, vera: User
) -> None:
    sign_in(page, vera)
    missing = page.goto(f"{console_url}/t/acme/no-such-page/")
    assert missing is not None and missing.status == 404
    assert page.get_by_role("heading", level=1).inner_text() == "Page not found"
    assert page.get_by_role("link", name="API docs").get_attribute("href") == "/api/docs/"
    assert computed(page, ".topbar", "backgroundColor") == "rgb(20, 33, 61)"  # the console's stylesheet applies
    assert page.get_by_text("URL patterns").count() == 0

    refused = page.goto(f"{console_url}/t/acme/deployments/new/")
    assert refused is not None and refused.status == 403
    assert page.get_by_role("heading", level=1).inner_text() == "You can't do this here"
    assert page.get_by_text("This needs the 'member' role in tenant 'acme'.").is_visible()


def test_tables_never_make_a_phone_page_scroll_sideways(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, adam: User, acme: Tenant
) -> None:
    long_name = "a-rather-long-username-that-goes-on-and-on"
    someone = User.objects.create_user(long_name, email=f"{long_name}@a-very-long-domain-name.example.test")
    Membership.unscoped_objects.create(tenant=acme, user=someone, role="member")
    sign_in(page, adam)
    page.set_viewport_size({"width": PHONE["width"], "height": PHONE["height"]})

    page.goto(f"{console_url}/t/acme/members/")

    page.get_by_text(long_name).first.wait_for()
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the members page is {overflow}px wider than a 390 px phone"
    assert page.locator(".table-wrap.stack thead").evaluate("(el) => el.getBoundingClientRect().height") <= 1
