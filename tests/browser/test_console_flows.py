"""The console in a real browser. The first test runs the whole platform: worker, local agent, gateway."""

from __future__ import annotations

import csv
import io
import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import User
from django.db.models import Sum
from django.utils import timezone

from deployments.models import ModelDeployment, Revision
from quotas.models import Quota, UsageRollup
from tenants.models import ApiKey, Membership, Tenant
from tests.support.browser import PHONE, Stack, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def chat(gateway_url: str, key: str, model: str = "chat") -> int:
    """One chat completion through the gateway; returns the HTTP status."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).encode()
    request = urllib.request.Request(  # noqa: S310 - our own gateway on loopback
        gateway_url + "/v1/chat/completions",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def eventually(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def test_it_creates_a_deployment_serves_it_with_a_new_key_moves_the_canary_and_revokes_the_key(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, stack: Stack, alice: User, acme: Tenant
) -> None:
    Quota.objects.for_tenant(acme).update(max_replicas=4)
    sign_in(page, alice)

    # Create a deployment and watch the status partial refresh itself until it is ready.
    page.goto(f"{console_url}/t/acme/deployments/new/")
    page.get_by_label("Name").fill("chat")
    page.get_by_label("Model:", exact=True).fill("frontdoor/sim-chat")
    page.get_by_role("button", name="Create deployment").click()
    page.wait_for_url(f"{console_url}/t/acme/deployments/chat/")
    status = page.locator("#deployment-status")
    try:
        status.locator(".status-ready").wait_for(timeout=90_000)
    except Exception as exc:
        raise AssertionError(f"never became ready; worker log:\n{stack.logs()}") from exc
    assert status.get_by_test_id("ready-replicas").inner_text() == "1"

    # Create a key; the secret is shown once and works against the gateway.
    page.goto(f"{console_url}/t/acme/keys/")
    page.get_by_label("Name").fill("browser")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_test_id("new-key").inner_text().strip()
    assert secret.startswith("fd_") and ApiKey.objects.for_tenant(acme).get(name="browser").verify(
        secret.rsplit("_", 1)[1]
    )
    eventually(lambda: chat(stack.gateway_url, secret) == 200, 15, "the gateway to accept the new key")

    # A new revision as a 10% canary, then the slider's number field moves it to 50%.
    page.goto(f"{console_url}/t/acme/deployments/chat/")
    page.get_by_label("Model:", exact=True).fill("frontdoor/sim-chat-v2")
    page.get_by_label("Canary share (%):").fill("10")
    page.get_by_role("button", name="Create revision").click()
    page.wait_for_url(f"{console_url}/t/acme/deployments/chat/")
    page.locator("#id_canary_weight").fill("50")
    page.get_by_role("button", name="Set traffic").click()
    page.get_by_text("Traffic: r2 50%, r1 50%.").wait_for()
    deployment = ModelDeployment.objects.for_tenant(acme).get(name="chat")
    assert dict(Revision.objects.for_tenant(acme).filter(deployment=deployment).values_list("number", "weight")) == {
        1: 50,
        2: 50,
    }
    status.locator(".status-ready").wait_for(timeout=90_000)
    screenshot(page, "deployment-detail.png")
    page.goto(f"{console_url}/t/acme/")
    screenshot(page, "overview.png")
    page.set_viewport_size(PHONE)
    screenshot(page, "overview-phone.png")
    page.set_viewport_size({"width": 1280, "height": 900})

    # Revoke the key: the gateway refuses it within seconds.
    page.goto(f"{console_url}/t/acme/keys/")
    page.get_by_role("button", name="Revoke").click()
    page.get_by_text("revoked; the gateway refuses it").wait_for()
    eventually(lambda: chat(stack.gateway_url, secret) == 401, 5, "the gateway to refuse the revoked key")


def test_it_invites_a_member_who_accepts_the_link(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, adam: User, acme: Tenant, browser: object
) -> None:
    sign_in(page, adam)
    page.goto(f"{console_url}/t/acme/members/")
    page.get_by_role("textbox", name="Email:", exact=True).fill("newbie@example.test")
    page.get_by_role("button", name="Create invitation link").click()
    link = page.get_by_test_id("invite-link").inner_text().strip()
    assert link.startswith(console_url + "/invite/")

    # The invitee has no account: the link's page makes one (with the invited email) and joins in one step.
    other = page.context.browser.new_context()  # type: ignore[union-attr]
    invitee = other.new_page()
    try:
        invitee.goto(link)
        invitee.get_by_label("Username:").fill("newbie")
        invitee.get_by_label("Password:", exact=True).fill("a long unusual phrase")
        invitee.get_by_label("Password (again):").fill("a long unusual phrase")
        invitee.get_by_role("button", name="Create account and join").click()
        invitee.wait_for_url(f"{console_url}/t/acme/")
        assert invitee.get_by_text("Welcome to Acme").is_visible()
    finally:
        other.close()
    newbie = User.objects.get(username="newbie")
    assert newbie.email == "newbie@example.test"
    assert Membership.objects.for_tenant(acme).get(user=newbie).role == "member"


def test_it_steers_a_canary_rollout_from_the_panel(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, bob: User, acme: Tenant
) -> None:
    from deployments import services
    from deployments.models import Rollout

    deployment = services.create_deployment(acme, {"name": "chat", "model": "frontdoor/sim-chat"}, actor=None)
    services.update_deployment(deployment, {"model": "frontdoor/sim-chat-v2"}, canary_weight=0, actor=None)
    sign_in(page, bob)
    page.goto(f"{console_url}/t/acme/deployments/chat/")
    panel = page.locator("#rollout-panel")
    panel.get_by_label("Steps:").fill("20, 100")
    panel.get_by_role("button", name="Start rollout").click()  # htmx POST with the CSRF header; the panel swaps
    page.get_by_text("Rollout of r2 started.").wait_for()
    assert "1 of 2: 20% to r2" in panel.get_by_test_id("rollout-status").inner_text()
    page.locator("#rollout-panel").get_by_role("button", name="Pause").click()
    page.get_by_text("Rollout paused.").wait_for()
    page.locator("#rollout-panel").get_by_role("button", name="Roll back").click()  # confirm() accepted
    page.locator("#rollout-panel").get_by_text("rolled back by hand").wait_for()  # the events say it too
    rollout = Rollout.objects.for_tenant(acme).get(deployment=deployment)
    assert rollout.status == Rollout.Status.ROLLED_BACK and rollout.reason == "rolled back by hand"
    assert dict(Revision.objects.for_tenant(acme).filter(deployment=deployment).values_list("number", "weight")) == {
        1: 100,
        2: 0,
    }


def test_it_shows_a_viewer_no_write_controls(
    page: Page,
    sign_in: Callable[[Page, User], None],
    console_url: str,
    vera: User,
    acme: Tenant,
) -> None:
    from deployments import services

    services.create_deployment(acme, {"name": "chat", "model": "frontdoor/sim-chat"}, actor=None)
    sign_in(page, vera)
    for path in ("/t/acme/", "/t/acme/deployments/", "/t/acme/deployments/chat/", "/t/acme/members/"):
        page.goto(console_url + path)
        writes = page.locator("form[method=post] button, a.button").filter(has_not_text="Sign out")
        assert writes.count() == 0, f"{path} shows write controls to a viewer: {writes.all_inner_texts()}"
    assert page.get_by_role("link", name="API keys").count() == 0
    assert page.get_by_role("link", name="Audit log").count() == 0
    response = page.goto(f"{console_url}/t/acme/deployments/new/")
    assert response is not None and response.status == 403


def test_it_lets_staff_download_the_usage_report_whose_totals_match_the_database(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, staff: User, acme: Tenant, globex: Tenant
) -> None:
    from django.urls import reverse

    report = reverse("staff-usage")
    today = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0)
    rng = random.Random(7)
    UsageRollup.unscoped_objects.bulk_create(
        UsageRollup(
            tenant=tenant,
            minute=today - timedelta(days=day, minutes=minute),
            deployment_name="chat",
            requests=rng.randint(1, 500),
            errors=rng.randint(0, 5),
            prompt_tokens=rng.randint(0, 9000),
            completion_tokens=rng.randint(0, 9000),
        )
        for tenant in (acme, globex)
        for day in range(6)
        for minute in range(3)
    )
    first = (today - timedelta(days=6)).date().isoformat()
    sign_in(page, staff)
    page.goto(f"{console_url}{report}?from={first}&to={today.date().isoformat()}")
    screenshot(page, "staff-report.png")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download_info.value.path()).read_text())))
    expected = UsageRollup.unscoped_objects.aggregate(
        requests=Sum("requests"), tokens=Sum("prompt_tokens") + Sum("completion_tokens")
    )
    assert sum(int(row["requests"]) for row in rows) == expected["requests"]
    assert sum(int(row["tokens"]) for row in rows) == expected["tokens"]
    assert {row["tenant"] for row in rows} == {"acme", "globex"}
