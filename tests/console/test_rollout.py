"""The rollout panel on a deployment's page: members start, pause, resume, promote and roll back a canary rollout
(through ``deployments.rollout``, the REST API's functions); viewers see its status only."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client

from deployments import services
from deployments.models import DeploymentEvent, ModelDeployment, Revision, Rollout
from tenants.models import Tenant

PANEL = "/t/acme/deployments/chat/rollout/"


@pytest.fixture
def chat(acme: Tenant, make_deployment: Callable[..., ModelDeployment]) -> ModelDeployment:
    """``chat`` with r1 serving everything and a new r2 taking no traffic yet."""
    deployment = make_deployment(acme, "chat")
    return services.update_deployment(deployment, {"model": "frontdoor/sim-chat-v2"}, canary_weight=0, actor=None)


def weights(deployment: ModelDeployment) -> dict[int, int]:
    return dict(Revision.unscoped_objects.filter(deployment=deployment).values_list("number", "weight"))


def start(client: Client, **extra: str) -> object:
    data = {"action": "start", "rollout-steps": "20, 50, 100", "rollout-pause_s": "15"}
    return client.post(PANEL, data, **extra)


def test_it_starts_a_rollout_of_the_newest_revision(
    console: Callable[[User | None], Client], bob: User, chat: ModelDeployment
) -> None:
    client = console(bob)
    assert "Start rollout" in client.get("/t/acme/deployments/chat/").content.decode()
    response = start(client)
    assert response.status_code == 302 and response["Location"] == "/t/acme/deployments/chat/"  # type: ignore[attr-defined]
    rollout = Rollout.objects.for_tenant(chat.tenant_id).get(deployment=chat)
    assert (rollout.revision.number, rollout.stable_revision.number) == (2, 1)
    assert rollout.steps == [20, 50, 100] and rollout.pause_s == 15 and rollout.status == Rollout.Status.RUNNING
    assert weights(chat) == {1: 80, 2: 20}
    page = client.get("/t/acme/deployments/chat/").content.decode()
    assert "Rollout of r2 started." in page and "1 of 3: 20% to r2" in page
    assert "Promote" in page and "Pause" in page and "Roll back" in page and "Start rollout" not in page


def test_it_pauses_and_resumes_over_htmx_with_the_panel_alone(
    console: Callable[[User | None], Client], bob: User, chat: ModelDeployment
) -> None:
    client = console(bob)
    start(client)
    paused = client.post(PANEL, {"action": "pause"}, HTTP_HX_REQUEST="true")
    body = paused.content.decode()
    assert paused.status_code == 200 and "<html" not in body and 'id="rollout-panel"' in body
    assert "Rollout paused." in body and "Resume" in body and ">Pause<" not in body
    assert Rollout.objects.for_tenant(chat.tenant_id).get(deployment=chat).paused
    resumed = client.post(PANEL, {"action": "resume"}, HTTP_HX_REQUEST="true")
    assert "Rollout resumed." in resumed.content.decode()
    assert not Rollout.objects.for_tenant(chat.tenant_id).get(deployment=chat).paused
    assert list(
        DeploymentEvent.objects.for_tenant(chat.tenant_id)
        .filter(deployment=chat, reason__in=["RolloutPaused", "RolloutResumed"])
        .order_by("created_at", "id")
        .values_list("reason", flat=True)
    ) == ["RolloutPaused", "RolloutResumed"]


def test_it_rolls_back_and_shows_why(
    console: Callable[[User | None], Client], bob: User, chat: ModelDeployment
) -> None:
    client = console(bob)
    start(client)
    response = client.post(PANEL, {"action": "rollback"}, HTTP_HX_REQUEST="true")
    body = response.content.decode()
    rollout = Rollout.objects.for_tenant(chat.tenant_id).get(deployment=chat)
    assert rollout.status == Rollout.Status.ROLLED_BACK and rollout.reason == "rolled back by hand"
    assert weights(chat) == {1: 100, 2: 0}
    assert "rolled back by hand" in body and "Start rollout" in body  # a new rollout may start again


def test_it_promotes_to_all_traffic(console: Callable[[User | None], Client], bob: User, chat: ModelDeployment) -> None:
    client = console(bob)
    start(client)
    client.post(PANEL, {"action": "promote"})
    assert Rollout.objects.for_tenant(chat.tenant_id).get(deployment=chat).status == Rollout.Status.SUCCEEDED
    assert weights(chat) == {1: 0, 2: 100}


def test_it_shows_the_services_refusals_on_the_form(
    console: Callable[[User | None], Client], bob: User, chat: ModelDeployment
) -> None:
    client = console(bob)
    bad = client.post(PANEL, {"action": "start", "rollout-steps": "50, 20", "rollout-pause_s": "15"})
    assert bad.status_code == 422 and "end at 100" in str(bad.context["rollout_form"].errors["steps"])
    words = client.post(PANEL, {"action": "start", "rollout-steps": "ten", "rollout-pause_s": "15"})
    assert words.status_code == 422 and "whole numbers" in str(words.context["rollout_form"].errors["steps"])
    assert not Rollout.objects.for_tenant(chat.tenant_id).exists()
    nothing = client.post(PANEL, {"action": "pause"})
    assert nothing.status_code == 409 and "no rollout is running" in nothing.content.decode()
    # Over htmx the refusal comes back at 200 (htmx does not swap 4xx) with the panel showing it.
    twice = client.post(PANEL, {"action": "pause"}, HTTP_HX_REQUEST="true")
    assert twice.status_code == 200 and "no rollout is running" in twice.content.decode()


def test_it_shows_a_viewer_the_status_only_and_refuses_changes(
    console: Callable[[User | None], Client], bob: User, vera: User, chat: ModelDeployment
) -> None:
    start(console(bob))
    viewer = console(vera)
    page = viewer.get("/t/acme/deployments/chat/").content.decode()
    assert "1 of 3: 20% to r2" in page
    assert "Promote" not in page and "Roll back" not in page and 'name="action" value="pause"' not in page
    for action in ("pause", "rollback", "promote", "start"):
        assert viewer.post(PANEL, {"action": action}).status_code == 403
    rollout = Rollout.objects.for_tenant(chat.tenant_id).get(deployment=chat)
    assert rollout.status == Rollout.Status.RUNNING and not rollout.paused
    assert weights(chat) == {1: 80, 2: 20}
    polled = viewer.get(PANEL, HTTP_HX_REQUEST="true")
    assert polled.status_code == 200 and 'hx-trigger="every 5s"' in polled.content.decode()
