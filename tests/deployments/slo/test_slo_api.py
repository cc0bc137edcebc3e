"""REST: ``.../deployments/{name}/slo/`` samples and ``.../rollout/`` status and actions, scoped per tenant."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.urls import include, path
from django.utils import timezone
from rest_framework.routers import SimpleRouter
from rest_framework.test import APIClient

from controlplane.urls import urlpatterns as main_urlpatterns
from deployments.api import slo as slo_api
from deployments.models import DeploymentEvent, ModelDeployment, Revision
from tenants.models import Tenant
from tests.support.scaling import add_revision, sample

# Until deployments/api/urls.py registers these routes, this module is the test's URL map (pytest.mark.urls).
_router = SimpleRouter()
slo_api.register(_router, r"tenants/(?P<tenant>[^/]+)/deployments/(?P<deployment_name>[^/]+)")
urlpatterns = [path("api/v1/", include(_router.urls)), *main_urlpatterns]

pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]
BASE = "/api/v1/tenants/acme/deployments/chat"


@pytest.fixture
def deployment(acme: Tenant, make_deployment: Callable[..., ModelDeployment]) -> ModelDeployment:
    return make_deployment(acme, min_replicas=1, max_replicas=2, slo_error_rate=0.01, slo_p95_latency_ms=300)


def test_it_returns_recent_samples_for_the_whole_deployment_or_one_revision(
    deployment: ModelDeployment, api: Callable[[User | None], APIClient], vera: User
) -> None:
    revision = deployment.revisions.get()
    now = timezone.now()
    sample(deployment, None, now - timedelta(minutes=5), requests=10, errors=1, latency_ms=80)
    sample(deployment, revision, now - timedelta(minutes=5), requests=10, errors=1, latency_ms=80)
    sample(deployment, None, now - timedelta(hours=3), requests=99)  # outside 1h
    body = api(vera).get(f"{BASE}/slo/?range=1h").json()
    assert body["resolution"] == "10s"
    assert body["objectives"] == {"p95_latency_ms": 300, "error_rate": 0.01}
    assert [(s["requests"], s["errors"], s["revision"]) for s in body["samples"]] == [(10, 1, None)]
    assert body["samples"][0]["error_rate"] == pytest.approx(0.1)
    one = api(vera).get(f"{BASE}/slo/?range=1h&revision=r1").json()
    assert [s["revision"] for s in one["samples"]] == ["r1"]


def test_it_refuses_an_unknown_range_or_revision(
    deployment: ModelDeployment, api: Callable[[User | None], APIClient], vera: User
) -> None:
    assert api(vera).get(f"{BASE}/slo/?range=7y").status_code == 400
    assert api(vera).get(f"{BASE}/slo/?revision=r7").status_code == 400


def test_another_tenant_sees_nothing(
    deployment: ModelDeployment, api: Callable[[User | None], APIClient], charlie: User
) -> None:
    assert api(charlie).get(f"{BASE}/slo/").status_code == 404
    assert api(charlie).get(f"{BASE}/rollout/").status_code == 404
    assert api(charlie).post(f"{BASE}/rollout/", {"action": "pause"}, format="json").status_code == 404
    assert api(None).get(f"{BASE}/slo/").status_code in (401, 403)


def test_a_member_runs_a_rollout_through_the_api(
    deployment: ModelDeployment, api: Callable[[User | None], APIClient], bob: User, vera: User
) -> None:
    add_revision(deployment, weight=0)
    client = api(bob)
    assert client.get(f"{BASE}/rollout/").json() == {"rollout": None}
    start = {
        "action": "start",
        "revision": "r2",
        "steps": [10, 25, 50, 100],
        "pause_s": 30,
        "max_error_rate_delta": 0.05,
        "max_p95_ratio": 1.5,
    }
    assert api(vera).post(f"{BASE}/rollout/", start, format="json").status_code == 403
    response = client.post(f"{BASE}/rollout/", start, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["rollout"]["weight"] == 10
    assert {r.name: r.weight for r in Revision.unscoped_objects.filter(deployment=deployment)} == {"r1": 90, "r2": 10}
    again = client.post(f"{BASE}/rollout/", start, format="json")
    assert again.status_code == 409 and again.json()["error"]["code"] == "rollout_conflict"

    assert client.post(f"{BASE}/rollout/", {"action": "pause"}, format="json").json()["rollout"]["paused"] is True
    assert client.post(f"{BASE}/rollout/", {"action": "resume"}, format="json").json()["rollout"]["paused"] is False
    promoted = client.post(f"{BASE}/rollout/", {"action": "promote"}, format="json").json()["rollout"]
    assert promoted["status"] == "succeeded" and promoted["weight"] == 100
    assert client.get(f"{BASE}/rollout/").json()["rollout"]["status"] == "succeeded"
    assert client.post(f"{BASE}/rollout/", {"action": "rollback"}, format="json").status_code == 409
    reasons = set(DeploymentEvent.unscoped_objects.filter(deployment=deployment).values_list("reason", flat=True))
    assert {"RolloutStarted", "RolloutPaused", "RolloutResumed", "RolloutSucceeded"} <= reasons


def test_it_refuses_bad_rollout_input(
    deployment: ModelDeployment, api: Callable[[User | None], APIClient], bob: User
) -> None:
    add_revision(deployment, weight=0)
    client = api(bob)
    cases = [
        {"action": "start"},
        {"action": "start", "revision": "r2", "steps": [50, 10, 100]},
        {"action": "start", "revision": "r2", "max_p95_ratio": 0.5},
        {"action": "start", "revision": "r9"},
        {"action": "explode"},
    ]
    for payload in cases:
        response = client.post(f"{BASE}/rollout/", payload, format="json")
        assert response.status_code == 400, (payload, response.json())


def test_a_retried_rollout_start_with_the_same_idempotency_key_replays_the_first_answer(
    deployment: ModelDeployment, api: Callable[[User | None], APIClient], bob: User
) -> None:
    add_revision(deployment, weight=0)
    client = api(bob)
    start = {"action": "start", "revision": "r2", "steps": [20, 100]}
    first = client.post(f"{BASE}/rollout/", start, format="json", HTTP_IDEMPOTENCY_KEY="canary-1")
    replay = client.post(f"{BASE}/rollout/", start, format="json", HTTP_IDEMPOTENCY_KEY="canary-1")
    assert first.status_code == 201, first.json()
    assert (replay.status_code, replay.json()) == (201, first.json())
    assert replay["Idempotent-Replayed"] == "true"
    assert deployment.rollouts.count() == 1
    started = DeploymentEvent.unscoped_objects.filter(deployment=deployment, reason="RolloutStarted").count()
    assert started == 1
    # The same key for another action is a client error, not a silent replay of the start.
    other = client.post(f"{BASE}/rollout/", {"action": "pause"}, format="json", HTTP_IDEMPOTENCY_KEY="canary-1")
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
