"""The keys and audit pages in a real browser: a new key shown once (a reload neither repeats the POST nor shows the
key), a taken name refused on its field, an audit log that reads as sentences with request ids to copy, and neither
page wider than a 390 px phone."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import User

from controlplane.access import principal_for
from deployments import services as deployment_services
from tenants import invitations, services
from tenants.models import ApiKey, Tenant
from tests.support.browser import PHONE

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SIDEWAYS = "document.documentElement.scrollWidth - document.documentElement.clientWidth"


def create_key(page: Page, console_url: str, name: str) -> None:
    page.goto(f"{console_url}/t/acme/keys/")
    page.get_by_label("Name").fill(name)
    page.get_by_role("button", name="Create key").click()


def test_reloading_after_creating_a_key_shows_no_second_key_and_no_secret(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, adam: User, acme: Tenant
) -> None:
    sign_in(page, adam)
    create_key(page, console_url, "ci-bot")
    secret = page.get_by_test_id("new-key").inner_text().strip()
    page.wait_for_url(f"{console_url}/t/acme/keys/")  # the POST answered with a redirect
    assert ApiKey.objects.for_tenant(acme).get().verify(secret.rsplit("_", 1)[1])
    page.locator("#connect-h").wait_for(state="visible")  # the Connect panel, with the new key in its snippets
    assert secret in page.locator("#connect-curl-code").inner_text()

    page.reload()
    page.get_by_test_id("key-table").wait_for()
    assert page.get_by_test_id("new-key").count() == 0
    assert secret not in page.content()
    assert page.get_by_test_id("key-table").get_by_role("rowheader", name="ci-bot").count() == 1
    assert ApiKey.objects.for_tenant(acme).count() == 1


def test_a_taken_name_is_refused_on_its_field(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, adam: User, acme: Tenant
) -> None:
    ApiKey.issue(tenant=acme, name="ci-bot", scopes=["inference"])
    sign_in(page, adam)
    create_key(page, console_url, "ci-bot")
    name = page.get_by_label("Name")
    page.locator('input[name="name"][aria-invalid="true"]').wait_for()
    described_by = (name.get_attribute("aria-describedby") or "").split()
    said = " ".join(page.locator(f"#{element_id}").inner_text() for element_id in described_by)
    assert "a key named 'ci-bot' already exists in this tenant" in said
    assert name.input_value() == "ci-bot"
    assert page.get_by_test_id("new-key").count() == 0
    assert ApiKey.objects.for_tenant(acme).count() == 1


def test_the_audit_log_reads_as_sentences_and_copies_a_request_id(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, adam: User, acme: Tenant
) -> None:
    actor = principal_for(adam, None, acme)
    deployment_services.create_deployment(
        acme,
        {"name": "chat", "runtime": "builtin", "model": "frontdoor/sim-chat", "min_replicas": 0, "max_replicas": 1},
        actor=actor,
        request_id="req-deploy-0123456789abcdef",
    )
    key, _ = services.issue_key(acme, name="ci-bot", scopes=["inference"], actor=actor)
    services.update_key(key, changes={"name": "ci-bot-2"}, actor=actor)
    _, token = invitations.create_invitation(
        acme, email="newbie@example.test", role="member", invited_by=adam, actor=actor
    )
    newbie = User.objects.create_user("newbie", email="newbie@example.test")
    invitations.accept_invitation(token, user=newbie)

    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page, adam)
    page.goto(f"{console_url}/t/acme/audit/")
    table = page.get_by_test_id("audit-table")
    rows = table.locator("tbody tr")
    assert "newbie" in rows.nth(0).inner_text() and "added member newbie" in rows.nth(0).inner_text()
    renamed = table.locator("tr", has_text="changed API key ci-bot-2")
    assert "name: ci-bot → ci-bot-2" in renamed.inner_text()
    created = table.locator("tr", has_text="created deployment chat")
    assert "modeldeployment" not in table.inner_text() and f"{acme.pk}/chat" not in table.inner_text()
    created.get_by_role("button", name="Copy request id").click()
    created.get_by_role("button", name="Copy request id").filter(has_text="Copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == "req-deploy-0123456789abcdef"


def test_the_keys_and_audit_pages_never_scroll_sideways_on_a_phone(
    browser: Browser, sign_in: Callable[[Page, User], None], console_url: str, adam: User, acme: Tenant
) -> None:
    actor = principal_for(adam, None, acme)
    for n in range(3):  # long names, ids and changes: what would widen a table
        key, _ = services.issue_key(
            acme, name=f"{'deploy-pipeline-' * 5}{n}", scopes=["inference", "read", "manage"], actor=actor
        )
        services.update_key(key, changes={"requests_per_minute": 123_456_789}, actor=actor, request_id="f" * 64)
    context = browser.new_context(viewport=PHONE)
    context.set_default_timeout(15_000)
    phone = context.new_page()
    try:
        sign_in(phone, adam)
        create_key(phone, console_url, "phone-key")
        phone.get_by_test_id("new-key").wait_for()
        assert phone.evaluate(SIDEWAYS) <= 0, "the keys page with a new key and its Connect panel"
        phone.reload()
        phone.get_by_test_id("key-table").wait_for()
        assert phone.evaluate(SIDEWAYS) <= 0, "the keys page"
        phone.goto(f"{console_url}/t/acme/audit/")
        phone.get_by_test_id("audit-table").wait_for()
        assert phone.evaluate(SIDEWAYS) <= 0, "the audit page"
    finally:
        context.close()
