"""The deployment page in a real browser: the status refresh keeps the revisions table and the events current (and
leaves no stray text), the rollout panel is the one place that steers traffic while a rollout runs, and the create
form shows only the fields of the chosen runtime.

The rows a worker, an agent and a gateway would write (replica counts, events, SLO samples) are written here
directly: these tests are about what the page does with them, and stay fast.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from deployments import rollout as rollouts
from deployments import services
from deployments.models import DeploymentEvent, ModelDeployment, Revision, Rollout
from tenants.models import Tenant
from tests.support.scaling import sample

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Text nodes and elements between the status card and the rollout panel: none but whitespace.
BETWEEN_STATUS_AND_ROLLOUT = """() => {
  const status = document.getElementById("deployment-status");
  let node = status.nextSibling, text = "";
  while (node && !(node.id === "rollout-panel")) { text += node.textContent; node = node.nextSibling; }
  return text.trim();
}"""
# Text standing directly in <main>, outside every card (what a dropped out-of-band element leaves behind).
LOOSE_TEXT = """() => Array.from(document.querySelector("main").childNodes)
  .filter((node) => node.nodeType === Node.TEXT_NODE).map((node) => node.textContent).join("").trim()"""
UTC_TITLE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d UTC$")


@pytest.fixture
def chat(acme: Tenant) -> ModelDeployment:
    """``chat``, just created: pending, so its page refreshes the status every 2 s."""
    return services.create_deployment(acme, {"name": "chat", "model": "frontdoor/sim-chat"}, actor=None)


def test_it_refreshes_the_revisions_table_and_the_events_with_the_status_and_leaves_no_stray_text(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, vera: User, chat: ModelDeployment
) -> None:
    from playwright.sync_api import expect

    sign_in(page, vera)
    page.goto(f"{console_url}/t/acme/deployments/chat/")
    revisions = page.get_by_role("region", name="Revisions and traffic").locator("table")
    expect(revisions.locator("tbody tr").first).to_contain_text("0 / 0")
    tables = page.locator("table").count()

    # What the reconciler and the agent write once the replica is up.
    Revision.objects.for_tenant(chat.tenant_id).filter(deployment=chat).update(ready_replicas=1, desired_replicas=1)
    ModelDeployment.objects.for_tenant(chat.tenant_id).filter(pk=chat.pk).update(
        status="progressing", ready_replicas=1, desired_replicas=1
    )
    DeploymentEvent.record(chat, "ReplicaReady", "replica chat-r1-0 is serving")

    expect(page.get_by_test_id("ready-replicas")).to_have_text("1")  # the status card was swapped
    assert page.evaluate(BETWEEN_STATUS_AND_ROLLOUT) == ""
    expect(revisions.locator("tbody tr").first).to_contain_text("1 / 1")
    expect(page.get_by_role("region", name="Events")).to_contain_text("replica chat-r1-0 is serving")
    assert page.locator("table").count() == tables  # swapped in place, not added


@pytest.fixture
def canary(acme: Tenant) -> ModelDeployment:
    """``chat`` with r1 serving and r2 ready at 0 %, both revisions' replicas up."""
    deployment = services.create_deployment(acme, {"name": "chat", "model": "frontdoor/sim-chat"}, actor=None)
    services.update_deployment(deployment, {"model": "frontdoor/sim-chat-v2"}, canary_weight=0, actor=None)
    Revision.objects.for_tenant(acme).filter(deployment=deployment).update(ready_replicas=1, desired_replicas=1)
    return deployment


def test_the_rollout_panel_is_the_one_place_that_steers_traffic_while_a_rollout_runs(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, bob: User, canary: ModelDeployment
) -> None:
    from playwright.sync_api import expect

    # A rollout at its first step, its canary ready for 10 s of a 60 s watch, with what the collector wrote: the
    # canary is twice as slow as the stable revision.
    rollout = rollouts.start_rollout(canary, revision_number=2, steps=[20, 50, 100], pause_s=60, actor=None)
    ready_at = timezone.now() - timedelta(seconds=10)
    Rollout.objects.for_tenant(canary.tenant_id).filter(pk=rollout.pk).update(step_ready_at=ready_at)
    r1, r2 = Revision.objects.for_tenant(canary.tenant_id).filter(deployment=canary).order_by("number")
    sample(canary, r2, ready_at, requests=40, errors=2, latency_ms=90)
    sample(canary, r1, ready_at, requests=200, errors=1, latency_ms=40)

    sign_in(page, bob)
    page.goto(f"{console_url}/t/acme/deployments/chat/")
    panel = page.locator("#rollout-panel")
    set_traffic, new_revision = (page.get_by_role("button", name=n) for n in ("Set traffic", "Create revision"))
    expect(set_traffic).to_be_disabled()
    expect(new_revision).to_be_disabled()
    expect(page.get_by_test_id("traffic-locked")).to_contain_text("A rollout of r2 is running")

    following = panel.get_by_test_id("rollout-next")
    expect(following).to_contain_text("50% to r2")
    expect(following).to_contain_text(re.compile(r"judged in \d+ s"))
    assert UTC_TITLE.match(following.locator("time").get_attribute("title") or "")
    gate = panel.get_by_test_id("rollout-gate")
    assert [gate.get_by_test_id(t).inner_text() for t in ("canary-error-rate", "stable-error-rate")] == [
        "5.0 %",
        "0.5 %",
    ]
    assert [gate.get_by_test_id(t).inner_text() for t in ("canary-p95", "stable-p95")] == ["98 ms", "49 ms"]
    expect(panel.get_by_test_id("rollout-breach")).to_contain_text("canary p95 latency 98 ms is 2.00x")

    # Rolled back from the panel: the manual forms unlock, and r2 (back at 0 %) may be rolled out again.
    panel.get_by_role("button", name="Roll back").click()
    expect(set_traffic).to_be_enabled()
    expect(new_revision).to_be_enabled()
    expect(page.locator("#revision-table tbody")).to_contain_text("r2frontdoor/sim-chat-v20%")

    page.locator("#rollout-panel").get_by_role("button", name="Start rollout").click()
    expect(set_traffic).to_be_disabled()
    expect(page.locator("#rollout-panel").get_by_test_id("rollout-next")).to_contain_text(
        "waiting for r2's replicas to be ready"
    )

    # Promoted: r2 takes everything, so the panel offers no rollout of it, and the forms unlock again.
    page.locator("#rollout-panel").get_by_role("button", name="Promote").click()
    expect(page.locator("#rollout-panel").get_by_test_id("nothing-to-roll-out")).to_contain_text(
        "r2 already takes all traffic"
    )
    assert page.locator("#rollout-panel").get_by_role("button", name="Start rollout").count() == 0
    expect(set_traffic).to_be_enabled()
    expect(page.locator("#revision-table tbody")).to_contain_text("r2frontdoor/sim-chat-v2100%")
    assert page.evaluate(LOOSE_TEXT) == ""


def test_the_create_form_shows_only_the_fields_of_the_chosen_runtime_and_says_what_is_wrong_in_words(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, bob: User, acme: Tenant
) -> None:
    from playwright.sync_api import expect

    sign_in(page, bob)
    page.goto(f"{console_url}/t/acme/deployments/new/")
    form = page.locator("#create-form")
    endpoints, gpus, image = (form.get_by_label(n) for n in ("Endpoints:", "GPUs per replica:", "Image:"))
    protocol, images = form.get_by_label("Protocol:"), form.get_by_label("Serves image generation")
    expect(endpoints).to_be_hidden()
    expect(gpus).to_be_visible()
    expect(protocol).to_be_visible()

    form.get_by_label("Runtime:").select_option("external")
    expect(endpoints).to_be_visible()
    expect(form.get_by_label("Upstream key secret:")).to_be_visible()
    for hidden in (gpus, image, form.get_by_label("Secret environment:"), form.get_by_label("CPU cores per replica:")):
        expect(hidden).to_be_hidden()

    form.get_by_label("Runtime:").select_option("triton")
    expect(protocol).to_be_hidden()  # triton speaks v2 only
    expect(images).to_be_hidden()
    expect(gpus).to_be_visible()

    form.get_by_label("Runtime:").select_option("builtin")
    form.get_by_label("Name:").fill("chat")
    form.get_by_label("Model:", exact=True).fill("frontdoor/sim-chat")
    form.get_by_label("Min replicas:").fill("3")
    form.get_by_label("Max replicas:").fill("2")
    form.get_by_role("button", name="Create deployment").click()
    expect(page.locator("#create-form")).to_contain_text("Min replicas can't be more than max replicas.")
    expect(page.locator("#create-form").get_by_label("Endpoints:")).to_be_hidden()  # the answer is enhanced too

    page.locator("#create-form").get_by_label("Min replicas:").fill("1")
    page.locator("#create-form").get_by_role("button", name="Create deployment").click()
    page.wait_for_url(f"{console_url}/t/acme/deployments/chat/")
    assert ModelDeployment.objects.for_tenant(acme).get(name="chat").endpoints == []
