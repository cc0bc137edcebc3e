"""What the deployment page's htmx answers carry besides their own partial: whole elements, swapped out of band, that
the HTML parser keeps wherever they stand (never a bare ``<tbody>``, which it drops outside a table)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from deployments import services
from deployments.models import DeploymentEvent, ModelDeployment, Revision
from tenants.models import Tenant

PAGE = "/t/acme/deployments/chat/"
PANEL = "/t/acme/deployments/chat/rollout/"
START = {"action": "start", "rollout-steps": "20, 100", "rollout-pause_s": "15"}


def out_of_band(body: str) -> list[str]:
    """The ids of the elements ``body`` swaps out of band, in order."""
    return re.findall(r'<\w+ [^>]*id="([\w-]+)"[^>]*hx-swap-oob="true"', body)


@pytest.fixture
def chat(acme: Tenant, make_deployment: Callable[..., ModelDeployment]) -> ModelDeployment:
    return make_deployment(acme, "chat")


@pytest.fixture
def canary(chat: ModelDeployment) -> ModelDeployment:
    """``chat`` with a new r2 taking no traffic yet."""
    return services.update_deployment(chat, {"model": "frontdoor/sim-chat-v2"}, canary_weight=0, actor=None)


def test_the_page_renders_each_refreshed_element_once_and_nothing_out_of_band(
    console: Callable[[User | None], Client], vera: User, chat: ModelDeployment
) -> None:
    page = console(vera).get(PAGE).content.decode()

    for element in ('id="deployment-status"', 'id="revision-table"', 'id="deployment-events"', 'id="traffic-controls"'):
        assert page.count(element) == 1, element
    assert "hx-swap-oob" not in page


def test_the_status_refresh_brings_the_revisions_and_the_events_as_whole_elements(
    console: Callable[[User | None], Client], vera: User, chat: ModelDeployment
) -> None:
    Revision.objects.for_tenant(chat.tenant_id).filter(deployment=chat).update(ready_replicas=1, desired_replicas=1)
    DeploymentEvent.record(chat, "ReplicaReady", "replica chat-r1-0 is serving")

    body = console(vera).get(PAGE, HTTP_HX_REQUEST="true").content.decode()

    assert body.lstrip().startswith('<section class="card status-card" id="deployment-status"')
    assert out_of_band(body) == ["revision-table", "deployment-events"]
    revisions = body.split('id="revision-table"', 1)[1].split("</table>", 1)[0]
    assert "<table>" in revisions and "<tbody>" in revisions and "1 / 1" in revisions
    assert "replica chat-r1-0 is serving" in body.split('id="deployment-events"', 1)[1]


def test_a_rollout_action_brings_the_status_the_revisions_the_events_and_the_traffic_forms(
    console: Callable[[User | None], Client], bob: User, canary: ModelDeployment
) -> None:
    body = console(bob).post(PANEL, START, HTTP_HX_REQUEST="true").content.decode()

    assert body.lstrip().startswith('<section class="card" id="rollout-panel"')
    assert out_of_band(body) == ["traffic-controls", "deployment-status", "revision-table", "deployment-events"]
    assert 'r2</th><td>frontdoor/sim-chat-v2</td><td class="num">20%' in body
    assert "RolloutStarted" in body.split('id="deployment-events"', 1)[1]
    status = body.split('id="deployment-status"', 1)[1].split(">", 1)[0]
    assert 'hx-trigger="every 2s"' in status  # the status now refreshes itself while the rollout runs


def test_the_panels_poll_brings_the_traffic_forms_alone(
    console: Callable[[User | None], Client], bob: User, canary: ModelDeployment
) -> None:
    client = console(bob)
    client.post(PANEL, START)

    body = client.get(PANEL, HTTP_HX_REQUEST="true").content.decode()

    assert out_of_band(body) == ["traffic-controls"]


def test_a_refused_start_leaves_the_other_forms_alone(
    console: Callable[[User | None], Client], bob: User, canary: ModelDeployment
) -> None:
    body = console(bob).post(PANEL, START | {"rollout-steps": "50, 20"}, HTTP_HX_REQUEST="true").content.decode()

    assert "Start rollout" in body and "end at 100" in body
    assert out_of_band(body) == []  # what the user typed into the new-revision form stays as it is


def test_the_refresh_runs_as_many_queries_with_many_revisions_and_events_as_with_one(
    console: Callable[[User | None], Client], vera: User, chat: ModelDeployment
) -> None:
    client = console(vera)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(PAGE, HTTP_HX_REQUEST="true").status_code == 200
        return len(captured.captured_queries)

    one = queries()
    for number in range(2, 7):
        services.update_deployment(chat, {"model": f"frontdoor/sim-chat-v{number}"}, canary_weight=10, actor=None)
        DeploymentEvent.record(chat, "ReplicaReady", f"replica {number} is serving")

    assert queries() == one
