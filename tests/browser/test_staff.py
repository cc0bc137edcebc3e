"""The staff console in a real browser: the quota editor's refusals and preview, a phone-width tenants page, creating
a tenant whose owner accepts the mailed link, and API docs that render with every other origin cut off."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import User
from django.core import mail

from deployments.models import ModelDeployment
from quotas.models import Quota
from tenants.models import Membership, Tenant
from tests.console_staff.test_staff_pages import many_tenants
from tests.support.browser import DESKTOP, PHONE
from tests.support.staff import make_deployment

if TYPE_CHECKING:
    from playwright.sync_api import Page, Route

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def page_width(page: Page) -> tuple[int, int]:
    """(content width, viewport width) of the page: equal when nothing makes it scroll sideways."""
    scroll, client = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    return int(scroll), int(client)


def test_the_quota_editor_shows_a_refused_value_on_its_field_without_the_consoles_script(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, staff: User, acme: Tenant
) -> None:
    # The staff pages' own script swaps the 422 answer: the console-wide one is cut off to prove it.
    page.route(re.compile(r".*/static/console/console\.js.*"), lambda route: route.abort())
    sign_in(page, staff)
    page.goto(f"{console_url}/staff/tenants/acme/quota/")
    page.get_by_label("Max replicas:").fill("-3")
    page.get_by_role("button", name="Save quota").click()
    error = page.locator(".field.has-error").filter(has=page.get_by_label("Max replicas:"))
    error.get_by_text("Ensure this value is greater than or equal to 0.").wait_for()
    assert page.get_by_label("Max replicas:").input_value() == "-3"  # the input is kept
    # And the focus is on it, once the swap has settled.
    page.wait_for_function("document.activeElement && document.activeElement.name === 'max_replicas'")
    assert Quota.objects.for_tenant(acme).get().max_replicas == Quota().max_replicas


def test_the_quota_editor_lists_the_deployments_a_change_scales_down_before_saving(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, staff: User, acme: Tenant
) -> None:
    make_deployment(acme, "chat", min_replicas=3, max_replicas=4, desired_replicas=3)
    make_deployment(acme, "embed", min_replicas=2, max_replicas=2, desired_replicas=2)
    sign_in(page, staff)
    page.goto(f"{console_url}/staff/tenants/acme/quota/")
    preview = page.locator("#quota-preview")
    assert preview.get_by_text("No running deployment is scaled down.").is_visible()
    page.get_by_label("Max replicas:").fill("3")  # the preview follows the field as it is typed
    preview.get_by_test_id("capped-deployments").wait_for()
    assert preview.get_by_test_id("capped-deployments").inner_text() == "chat: 3 → 1 replica (below its minimum of 3)"
    assert ModelDeployment.objects.for_tenant(acme).get(name="chat").desired_replicas == 3  # nothing saved yet
    page.get_by_role("button", name="Save quota").click()
    page.locator("#quota-editor").get_by_text("Within seconds the autoscaler scales chat down to 1 replica").wait_for()
    assert Quota.objects.for_tenant(acme).get().max_replicas == 3


def test_the_staff_pages_never_scroll_sideways_on_a_phone(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, staff: User, acme: Tenant
) -> None:
    many_tenants(8)
    sign_in(page, staff)
    page.set_viewport_size({"width": PHONE["width"], "height": PHONE["height"]})
    for path in ("/staff/", "/staff/tenants/acme/quota/", "/staff/tenants/new/"):
        page.goto(console_url + path)
        assert page_width(page) == (PHONE["width"], PHONE["width"]), path
    page.goto(f"{console_url}/staff/")
    edit = page.get_by_role("link", name="Edit quota").last  # the table scrolls inside its card instead
    edit.scroll_into_view_if_needed()
    assert page_width(page) == (PHONE["width"], PHONE["width"])
    assert page.locator(".staff-tenants").evaluate("wrapper => wrapper.scrollLeft") > 0
    tenant = page.get_by_role("link", name="Tenant 7").bounding_box()
    assert tenant is not None and 0 <= tenant["x"] < PHONE["width"] / 2  # the tenant column stays in view beside it
    edit.click()
    page.wait_for_url(f"{console_url}/staff/tenants/t007/quota/")
    page.set_viewport_size({"width": DESKTOP["width"], "height": DESKTOP["height"]})


def test_staff_create_a_tenant_whose_owner_accepts_the_mailed_invitation(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, staff: User, acme: Tenant
) -> None:
    sign_in(page, staff)
    page.goto(f"{console_url}/staff/")
    page.get_by_role("link", name="Create tenant").click()
    page.get_by_label("Slug:").fill("acme")  # taken
    page.get_by_label("Name:").fill("Initech")
    page.get_by_label("Owner's e-mail:").fill("peter@example.test")
    page.get_by_label("nvidia-h100 GPUs:").fill("4")
    page.get_by_role("button", name="Create tenant and invite its owner").click()
    slug_field = page.locator(".field.has-error").filter(has=page.get_by_label("Slug:"))
    slug_field.get_by_text("A tenant with the slug 'acme' already exists; choose another.").wait_for()
    assert page.get_by_label("Name:").input_value() == "Initech"
    assert not Tenant.objects.filter(name="Initech").exists() and mail.outbox == []

    page.get_by_label("Slug:").fill("initech")
    page.get_by_role("button", name="Create tenant and invite its owner").click()
    page.wait_for_url(f"{console_url}/staff/tenants/initech/quota/")
    page.get_by_text("Tenant initech created; its owner's invitation went to peter@example.test.").wait_for()
    assert page.get_by_label("nvidia-h100 GPUs:").input_value() == "4"

    [message] = mail.outbox
    link = re.search(r"http://\S+/invite/[\w-]+/", str(message.body))
    assert link is not None and link.group(0).startswith(console_url)
    other = page.context.browser.new_context()  # type: ignore[union-attr]
    invitee = other.new_page()
    try:
        invitee.goto(link.group(0))
        invitee.get_by_label("Username:").fill("peter")
        invitee.get_by_label("Password:", exact=True).fill("a long unusual phrase")
        invitee.get_by_label("Password (again):").fill("a long unusual phrase")
        invitee.get_by_role("button", name="Create account and join").click()
        invitee.wait_for_url(f"{console_url}/t/initech/")
    finally:
        other.close()
    initech = Tenant.objects.get(slug="initech")
    assert Membership.objects.for_tenant(initech).get(user__username="peter").role == "owner"


def test_the_api_docs_render_with_every_other_origin_cut_off(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, staff: User
) -> None:
    elsewhere: list[str] = []

    def only_this_origin(route: Route) -> None:
        if route.request.url.startswith(console_url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_origin)
    sign_in(page, staff)
    page.goto(f"{console_url}/staff/")
    page.locator('nav[aria-label="Staff pages"]').get_by_role("link", name="API docs").click()
    page.wait_for_url(f"{console_url}/api/docs/")
    page.locator(".swagger-ui .info .title").get_by_text("Frontdoor control plane API").wait_for()
    page.locator(".swagger-ui .opblock").first.wait_for()  # the schema loaded and its operations are listed
    page.goto(f"{console_url}/api/redoc/")
    page.locator("#redoc-container h1").get_by_text("Frontdoor control plane API").wait_for()
    assert elsewhere == []
