"""One place to steer traffic: while a rollout runs the manual weight and new-revision forms are locked (and refused by
the server), the rollout panel says when its next step is judged and shows the canary against the stable revision
over the gate's window; it never offers to roll out a revision that already takes all traffic."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from deployments import rollout as rollouts
from deployments import services
from deployments.console.figures import rollout_progress
from deployments.models import ModelDeployment, Revision, Rollout
from tenants.models import Tenant
from tests.support.scaling import sample

PAGE = "/t/acme/deployments/chat/"
PANEL = "/t/acme/deployments/chat/rollout/"
NEW_REVISION = {"rev-model": "frontdoor/sim-chat-v3", "rev-image": "", "rev-canary_weight": "10"}


@pytest.fixture
def canary(acme: Tenant, make_deployment: Callable[..., ModelDeployment]) -> ModelDeployment:
    """``chat`` with r1 serving everything and a new r2 taking no traffic yet."""
    deployment = make_deployment(acme, "chat")
    return services.update_deployment(deployment, {"model": "frontdoor/sim-chat-v2"}, canary_weight=0, actor=None)


@pytest.fixture
def running(canary: ModelDeployment) -> Rollout:
    return rollouts.start_rollout(canary, revision_number=2, steps=[20, 50, 100], pause_s=60, actor=None)


def weights(deployment: ModelDeployment) -> dict[int, int]:
    return dict(
        Revision.objects.for_tenant(deployment.tenant_id).filter(deployment=deployment).values_list("number", "weight")
    )


def text(response: object) -> str:
    return html.unescape(response.content.decode())  # type: ignore[attr-defined]


def test_it_locks_the_manual_forms_while_a_rollout_runs_and_says_why(
    console: Callable[[User | None], Client], bob: User, running: Rollout
) -> None:
    page = text(console(bob).get(PAGE))

    controls = page.split('id="traffic-controls"', 1)[1]
    assert controls.count('<fieldset class="steer" disabled aria-describedby="traffic-locked">') == 2
    assert "A rollout of r2 is running (step 1 of 3, checked against r1)" in controls
    assert "Steer it from the rollout panel: promote, pause or roll back." in controls


def test_it_unlocks_them_when_no_rollout_runs(
    console: Callable[[User | None], Client], bob: User, canary: ModelDeployment
) -> None:
    page = text(console(bob).get(PAGE))

    assert page.count('<fieldset class="steer">') == 2 and 'id="traffic-locked"' not in page


@pytest.mark.parametrize(
    ("path", "data", "form"),
    [
        ("/t/acme/deployments/chat/traffic/", {"canary_weight": "60"}, "canary_form"),
        ("/t/acme/deployments/chat/revision/", NEW_REVISION, "revision_form"),
    ],
)
def test_the_server_refuses_a_manual_traffic_change_while_a_rollout_runs(
    console: Callable[[User | None], Client],
    bob: User,
    running: Rollout,
    path: str,
    data: dict[str, str],
    form: str,
) -> None:
    response = console(bob).post(path, data)

    assert response.status_code == 409
    assert response.context[form].non_field_errors() == [
        "A rollout of r2 is running and sets the traffic itself: promote, pause or roll it back in the rollout panel "
        "first."
    ]
    assert weights(running.deployment) == {1: 80, 2: 20}  # nothing moved, no r3


def test_the_manual_forms_work_again_once_the_rollout_ends(
    console: Callable[[User | None], Client], bob: User, running: Rollout
) -> None:
    client = console(bob)
    client.post(PANEL, {"action": "rollback"})

    assert client.post("/t/acme/deployments/chat/traffic/", {"canary_weight": "30"}).status_code == 302
    assert weights(running.deployment) == {1: 70, 2: 30}


def test_it_never_offers_to_roll_out_a_revision_that_takes_all_traffic(
    console: Callable[[User | None], Client], bob: User, canary: ModelDeployment
) -> None:
    services.set_traffic(canary, {1: 0, 2: 100}, actor=None)
    client = console(bob)

    page = text(client.get(PAGE))
    refused = client.post(PANEL, {"action": "start", "rollout-steps": "20, 100", "rollout-pause_s": "15"})

    assert "Start rollout" not in page and "r2 already takes all traffic" in page
    assert refused.status_code == 422
    assert refused.context["rollout_form"].non_field_errors() == [
        "r2 already takes all traffic, so there is nothing to roll out: create a new revision (change the model or "
        "image) first."
    ]
    assert not Rollout.objects.for_tenant(canary.tenant_id).exists()


def test_it_offers_a_rolled_back_canary_again(
    console: Callable[[User | None], Client], bob: User, running: Rollout
) -> None:
    client = console(bob)
    client.post(PANEL, {"action": "rollback"})

    page = text(client.get(PAGE))

    assert "Roll out r2" in page and "r2 takes 0% of the traffic now" in page


def test_the_panel_says_when_the_next_step_is_judged_with_the_utc_time_on_hover(
    console: Callable[[User | None], Client], vera: User, running: Rollout
) -> None:
    ready_at = timezone.now() - timedelta(seconds=15)
    Rollout.objects.for_tenant(running.tenant_id).filter(pk=running.pk).update(step_ready_at=ready_at)
    judged_at = ready_at + timedelta(seconds=60)

    panel = text(console(vera).get(PANEL, HTTP_HX_REQUEST="true"))

    following = panel.split('data-testid="rollout-next">', 1)[1].split("</dd>", 1)[0]
    assert following.startswith("50% to r2")
    assert (
        f'<time datetime="{judged_at.isoformat()}" title="{judged_at:%Y-%m-%d %H:%M} UTC" data-countdown>' in following
    )
    assert re.search(r"judged <time [^>]+>in 4\d s</time>", following)  # 45 s less the time this request took
    assert "waiting for r2 to serve 10 requests in this step (0 so far)" in following


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({}, "waiting for r2's replicas to be ready, then a 60 s watch"),
        ({"paused": True}, "waiting for the rollout to be resumed"),
    ],
)
def test_the_panel_says_what_the_step_waits_for(
    console: Callable[[User | None], Client], vera: User, running: Rollout, change: dict[str, object], says: str
) -> None:
    Rollout.objects.for_tenant(running.tenant_id).filter(pk=running.pk).update(**change)

    panel = text(console(vera).get(PANEL, HTTP_HX_REQUEST="true"))

    following = panel.split('data-testid="rollout-next">', 1)[1].split("</dd>", 1)[0]
    assert says in following and "<time" not in following


def test_the_panel_shows_the_canary_against_the_stable_revision_over_the_gates_window(
    console: Callable[[User | None], Client], vera: User, running: Rollout
) -> None:
    ready_at = timezone.now() - timedelta(seconds=30)
    Rollout.objects.for_tenant(running.tenant_id).filter(pk=running.pk).update(step_ready_at=ready_at)
    r1, r2 = Revision.objects.for_tenant(running.tenant_id).filter(deployment=running.deployment).order_by("number")
    sample(running.deployment, r2, ready_at, requests=40, errors=2, latency_ms=40)
    sample(running.deployment, r1, ready_at, requests=200, errors=2, latency_ms=40)
    sample(running.deployment, r2, ready_at - timedelta(seconds=20), requests=50, errors=50)  # before the window

    panel = text(console(vera).get(PANEL, HTTP_HX_REQUEST="true"))

    gate = panel.split('data-testid="rollout-gate">', 1)[1].split("</table>", 1)[0]
    assert "this step's watch, which the gate judges." in panel
    for testid, shown in {
        "canary-error-rate": "5.0 %",
        "stable-error-rate": "1.0 %",
        "canary-p95": "49 ms",
        "stable-p95": "49 ms",
    }.items():
        assert f'data-testid="{testid}">{shown}</td>' in gate
    assert (
        'data-testid="error-bound">stable + 5 points</td>' in gate
        and 'data-testid="p95-bound">1.5 × stable</td>' in gate
    )
    assert "r2 served 40 requests in this window; a step is judged once it has served 10." in panel
    assert 'data-testid="rollout-breach"' not in panel


def test_it_warns_when_the_canary_is_out_of_bounds(
    console: Callable[[User | None], Client], vera: User, running: Rollout
) -> None:
    ready_at = timezone.now() - timedelta(seconds=30)
    Rollout.objects.for_tenant(running.tenant_id).filter(pk=running.pk).update(step_ready_at=ready_at)
    r1, r2 = Revision.objects.for_tenant(running.tenant_id).filter(deployment=running.deployment).order_by("number")
    sample(running.deployment, r2, ready_at, requests=40, errors=10)
    sample(running.deployment, r1, ready_at, requests=200, errors=0)

    panel = text(console(vera).get(PANEL, HTTP_HX_REQUEST="true"))

    assert "Out of bounds: canary error rate 25.0% exceeds the stable revision's 0.0% by more than 5.0%" in panel


def test_before_the_canary_is_ready_the_figures_run_from_the_steps_start_and_say_so(
    console: Callable[[User | None], Client], vera: User, running: Rollout
) -> None:
    panel = text(console(vera).get(PANEL, HTTP_HX_REQUEST="true"))

    assert "this step's start; the watch begins once r2 is ready." in panel
    assert 'data-testid="canary-error-rate">—</td>' in panel and 'data-testid="stable-p95">—</td>' in panel


def test_the_time_left_reads_in_seconds_then_minutes_then_hours(running: Rollout) -> None:
    now = timezone.now()
    for ready_s_ago, says in ((10, "in 50 s"), (-300, "in 6 min"), (-7200, "in 2 h"), (600, "now")):
        running.step_ready_at = now - timedelta(seconds=ready_s_ago)
        assert rollout_progress(running, now).until_text == says
