"""Every refusal a service gives reaches REST clients as one exact body: the status, ``code``, ``message``, ``fields``.

The services raise ``controlplane.domain_errors``; ``controlplane.errors`` maps them. These bodies are what clients
parse, so each is asserted whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import include, path
from rest_framework.routers import SimpleRouter
from rest_framework.test import APIClient

from controlplane.urls import urlpatterns as main_urlpatterns
from deployments import services
from deployments.api import slo as slo_api
from deployments.models import ModelDeployment
from quotas.models import Quota
from tenants.models import Tenant
from tests.support.scaling import add_revision

# The rollout routes are registered by this module's URL map (as tests/deployments/slo/test_slo_api.py does).
_router = SimpleRouter()
slo_api.register(_router, r"tenants/(?P<tenant>[^/]+)/deployments/(?P<deployment_name>[^/]+)")
urlpatterns = [path("api/v1/", include(_router.urls)), *main_urlpatterns]

pytestmark = pytest.mark.django_db

Api = Callable[[User | None], APIClient]
TENANT = "/api/v1/tenants/acme/"
DEPLOYMENTS = "/api/v1/tenants/acme/deployments/"


def refused(status: int, code: str, message: str, fields: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"type": "invalid_request", "code": code, "message": message, "fields": fields or {}}}


def answer(response: Any) -> tuple[int, dict[str, Any]]:
    return response.status_code, response.json()


@pytest.fixture
def chat(acme: Tenant) -> ModelDeployment:
    data = {"name": "chat", "runtime": "builtin", "model": "frontdoor/sim-chat", "min_replicas": 1, "max_replicas": 1}
    return services.create_deployment(acme, data, actor=None)


def test_a_tenant_with_deployments_is_not_deleted(api: Api, staff: User, chat: ModelDeployment) -> None:
    assert answer(api(staff).delete(TENANT)) == refused(
        409, "conflict", "tenant 'acme' still has 1 deployment(s); delete them first, then the tenant"
    )


def test_a_member_is_added_once(api: Api, alice: User, bob: User) -> None:
    response = api(alice).post(TENANT + "members/", {"username": "bob", "role": "member"}, format="json")
    assert answer(response) == refused(409, "conflict", "user 'bob' is already a member of 'acme'")


def test_an_admin_grants_no_owner_role(api: Api, adam: User, charlie: User) -> None:
    response = api(adam).post(TENANT + "members/", {"username": "charlie", "role": "owner"}, format="json")
    assert answer(response) == refused(
        403, "permission_denied", "only an owner or platform staff may grant the owner role"
    )


def test_an_admin_takes_no_owner_role_away(api: Api, adam: User, alice: User) -> None:
    response = api(adam).patch(TENANT + "members/alice/", {"role": "member"}, format="json")
    assert answer(response) == refused(
        403, "permission_denied", "only an owner or platform staff may grant or take away the owner role"
    )


def test_the_last_owner_stays(api: Api, alice: User) -> None:
    last_owner = "this is the tenant's last owner; make someone else owner first"
    demoted = api(alice).patch(TENANT + "members/alice/", {"role": "admin"}, format="json")
    removed = api(alice).delete(TENANT + "members/alice/")
    assert answer(demoted) == refused(409, "conflict", last_owner)
    assert answer(removed) == refused(409, "conflict", last_owner)


def test_a_deployment_being_deleted_refuses_changes(api: Api, bob: User, chat: ModelDeployment) -> None:
    api(bob).delete(DEPLOYMENTS + "chat/")
    deleting = refused(409, "deployment_deleting", "this deployment is being deleted; it can no longer be changed")
    assert answer(api(bob).patch(DEPLOYMENTS + "chat/", {"timeout_s": 5}, format="json")) == deleting
    assert answer(api(bob).post(DEPLOYMENTS + "chat/scale/", {"max_replicas": 2}, format="json")) == deleting
    assert answer(api(bob).post(DEPLOYMENTS + "chat/traffic/", {"weights": {"r1": 100}}, format="json")) == deleting


def test_a_deployment_beyond_the_quota_is_refused(api: Api, bob: User, acme: Tenant) -> None:
    Quota.objects.for_tenant(acme).update(max_deployments=0)
    response = api(bob).post(DEPLOYMENTS, {"name": "chat", "runtime": "builtin", "model": "m"}, format="json")
    assert answer(response) == refused(422, "quota_exceeded", "quota exceeded: deployments: asked 1, 0 of 0 left")


def test_input_only_the_service_refuses_is_a_field_error(api: Api, bob: User, chat: ModelDeployment) -> None:
    endpoints = api(bob).patch(DEPLOYMENTS + "chat/", {"endpoints": ["http://example.com/v1"]}, format="json")
    weights = api(bob).post(DEPLOYMENTS + "chat/traffic/", {"weights": {"r5": 100}}, format="json")

    message = "endpoints are only for runtime 'external'; runtime 'builtin' runs replicas"
    assert answer(endpoints) == refused(400, "invalid", f"endpoints: {message}", {"endpoints": [message]})
    no_r5 = "there is no revision r5"
    assert answer(weights) == refused(400, "invalid", f"weights: {no_r5}", {"weights": [no_r5]})


@pytest.mark.urls(__name__)
def test_rollout_refusals(api: Api, bob: User, chat: ModelDeployment) -> None:
    rollout = DEPLOYMENTS + "chat/rollout/"
    none_running = api(bob).post(rollout, {"action": "promote"}, format="json")
    add_revision(chat, weight=0)
    bad_steps = api(bob).post(rollout, {"action": "start", "revision": "r2", "steps": [50, 25, 100]}, format="json")
    assert api(bob).post(rollout, {"action": "start", "revision": "r2"}, format="json").status_code == 201
    second = api(bob).post(rollout, {"action": "start", "revision": "r2"}, format="json")

    assert answer(none_running) == refused(409, "rollout_conflict", "no rollout is running")
    steps = "steps must increase and end at 100"
    assert answer(bad_steps) == refused(400, "invalid", f"steps: {steps}", {"steps": [steps]})
    assert answer(second) == refused(
        409, "rollout_conflict", "a rollout is already running; promote or roll it back first"
    )
