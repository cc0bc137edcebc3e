"""A service's refusal on a console page: the exact status, the exact form errors or the exact flash message.

The services raise ``controlplane.domain_errors``; ``controlplane.console`` maps them once for every page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import User
from django.test import Client

from deployments import services
from deployments.models import ModelDeployment
from quotas.models import Quota
from tenants.models import Tenant

Console = Callable[[User | None], Client]
PANEL = "/t/acme/deployments/chat/rollout/"


def flashed(response: Any) -> list[tuple[str, str]]:
    return [(message.level_tag, str(message)) for message in response.context["messages"]]


def test_member_refusals_are_shown_on_the_add_form(console: Console, adam: User, bob: User) -> None:
    User.objects.create_user("newbie", email="newbie@example.test")
    client = console(adam)
    twice = client.post("/t/acme/members/", {"action": "add", "user": "bob", "role": "member"})
    owner = client.post("/t/acme/members/", {"action": "add", "user": "newbie", "role": "owner"})
    invited = client.post("/t/acme/members/", {"action": "invite", "email": "bob@example.test", "role": "member"})

    assert twice.status_code == 422
    assert twice.context["add_form"].errors == {"__all__": ["user 'bob' is already a member of 'acme'"]}
    assert owner.status_code == 422
    assert owner.context["add_form"].errors == {
        "__all__": ["only an owner or platform staff may grant the owner role"]
    }
    assert invited.status_code == 422
    assert invited.context["invite_form"].errors == {"email": ["bob@example.test is already a member of this tenant"]}


def test_member_change_refusals_are_flashed(console: Console, alice: User, adam: User) -> None:
    last_owner = console(alice).post("/t/acme/members/alice/", {"action": "remove"}, follow=True)
    not_an_owner = console(adam).post("/t/acme/members/alice/", {"action": "role", "role": "member"}, follow=True)
    no_role = console(adam).post("/t/acme/members/alice/", {"action": "role", "role": "emperor"}, follow=True)

    assert flashed(last_owner) == [("error", "this is the tenant's last owner; make someone else owner first")]
    assert flashed(not_an_owner) == [
        ("error", "only an owner or platform staff may grant or take away the owner role")
    ]
    assert flashed(no_role) == [("error", "pick a role")]


def test_deployment_refusals_are_shown_on_the_form(
    console: Console, bob: User, acme: Tenant, make_deployment: Callable[..., ModelDeployment]
) -> None:
    Quota.objects.for_tenant(acme).update(max_deployments=1)
    chat = make_deployment(acme, "chat")
    form = {"name": "other", "runtime": "builtin", "model": "m", "gpu_count": 0, "min_replicas": 1,
            "max_replicas": 1, "target_concurrency": 8, "timeout_s": 120}  # fmt: skip
    client = console(bob)
    over_quota = client.post("/t/acme/deployments/new/", form)
    services.delete_deployment(chat, actor=None)
    deleting = client.post("/t/acme/deployments/chat/scale/", {"min_replicas": 1, "max_replicas": 2})

    assert over_quota.status_code == 422
    assert over_quota.context["form"].errors == {"__all__": ["quota exceeded: deployments: asked 1, 0 of 1 left"]}
    assert deleting.status_code == 422
    assert deleting.context["scale_form"].errors == {
        "__all__": ["this deployment is being deleted; it can no longer be changed"]
    }


def test_rollout_refusals_are_shown_on_the_panel(
    console: Console, bob: User, acme: Tenant, make_deployment: Callable[..., ModelDeployment]
) -> None:
    chat = make_deployment(acme, "chat")
    services.update_deployment(chat, {"model": "frontdoor/sim-chat-v2"}, canary_weight=0, actor=None)
    client = console(bob)
    start = {"action": "start", "rollout-steps": "10, 100", "rollout-pause_s": "15"}
    nothing = client.post(PANEL, {"action": "promote"})
    assert client.post(PANEL, start).status_code == 302
    again = client.post(PANEL, start)
    bad_steps = client.post(PANEL, {**start, "rollout-steps": "50, 20"})

    assert nothing.status_code == 409 and nothing.context["rollout_error"] == "no rollout is running"
    assert again.status_code == 422
    assert again.context["rollout_form"].errors == {
        "__all__": ["a rollout is already running; promote or roll it back first"]
    }
    assert bad_steps.status_code == 422
    assert bad_steps.context["rollout_form"].errors == {"steps": ["steps must increase and end at 100"]}
