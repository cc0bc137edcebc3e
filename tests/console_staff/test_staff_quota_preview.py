"""The quota editor says what a change does before it is saved: the running deployments the autoscaler would scale
down, computed by the autoscaler's own code, so the next tick does exactly what the preview listed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from deployments.models import ModelDeployment
from deployments.scaling import tick as autoscale
from quotas.models import Quota
from quotas.quota_preview import CappedDeployment, deployments_capped_by
from tenants.models import AuditEvent, Tenant
from tests.console_staff.test_quota_editor import form_data
from tests.support.staff import make_deployment

URL = "/staff/tenants/acme/quota/"
PREVIEW = "/staff/tenants/acme/quota/preview/"


@pytest.fixture
def running(acme: Tenant) -> dict[str, ModelDeployment]:
    """acme at 7 desired replicas under a quota of 8: two autoscaled deployments and two the autoscaler leaves be."""
    Quota.objects.for_tenant(acme).update(max_replicas=8)
    return {
        # min = desired = the count the load wants: without a quota change, the tick keeps them as they are.
        "chat": make_deployment(acme, "chat", min_replicas=3, max_replicas=4, desired_replicas=3),
        "embed": make_deployment(acme, "embed", min_replicas=2, max_replicas=2, desired_replicas=2),
        "k8s-scaled": make_deployment(acme, "k8s-scaled", autoscaler_class="hpa", max_replicas=2, desired_replicas=2),
        "stopped": make_deployment(acme, "stopped", desired_state="stopped", max_replicas=3),
    }


def test_it_lists_the_deployments_a_lower_replica_quota_scales_down(
    running: dict[str, ModelDeployment], staff: User, client_as: Callable[[User | None], Client]
) -> None:
    response = client_as(staff).post(PREVIEW, form_data(max_replicas=5), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    page = response.content.decode()
    assert "<html" not in page and "<form" not in page and "If you save these values" in page  # the preview's body
    # chat may keep 5 - (2 + 2) = 1 of its 3; embed then still fits (5 - 1 - 2 = 2); hpa and stopped are not scaled.
    assert "<strong>chat</strong>: 3 → 1 replica" in page
    assert "below its minimum of 3" in page
    assert "embed" not in page and "k8s-scaled" not in page and "stopped" not in page


def test_it_counts_gpus_of_the_deployments_type(acme: Tenant, staff: User) -> None:
    make_deployment(acme, "big", gpu_type="nvidia-h100", gpu_count=2, min_replicas=1, max_replicas=4,
                    desired_replicas=3)  # fmt: skip
    make_deployment(acme, "small", gpu_type="nvidia-l4", gpu_count=1, max_replicas=1, desired_replicas=1)
    quota = Quota(tenant_id=acme.pk, max_replicas=100, gpus={"nvidia-h100": 4, "nvidia-l4": 1})
    assert deployments_capped_by(quota) == [CappedDeployment("big", 3, 2, 1)]


def test_it_says_when_nothing_is_scaled_down(
    running: dict[str, ModelDeployment], staff: User, client_as: Callable[[User | None], Client]
) -> None:
    page = client_as(staff).get(URL).content.decode()
    assert "No running deployment is scaled down." in page
    raised = client_as(staff).post(PREVIEW, form_data(max_replicas=50), HTTP_HX_REQUEST="true").content.decode()
    assert "No running deployment is scaled down." in raised


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("max_replicas", -3, "Max replicas: Ensure this value is greater than or equal to 0."),
     ("max_deployments", "lots", "Max deployments: Enter a whole number."),
     ("gpus_nvidia-h100", -1, "nvidia-h100 GPUs: ")],
)  # fmt: skip
def test_it_previews_values_that_cannot_be_saved_as_the_reasons_why(
    field: str, value: Any, message: str, running: dict[str, ModelDeployment], staff: User,
    client_as: Callable[[User | None], Client],
) -> None:  # fmt: skip
    response = client_as(staff).post(PREVIEW, form_data(**{field: value}), HTTP_HX_REQUEST="true")
    assert response.status_code == 200  # a preview is no refused form: htmx swaps it as it is
    page = response.content.decode()
    assert "cannot be saved yet" in page and message in page
    assert "No running deployment" not in page


def test_it_saves_nothing_and_records_nothing(
    running: dict[str, ModelDeployment], acme: Tenant, staff: User, client_as: Callable[[User | None], Client]
) -> None:
    before = Quota.objects.for_tenant(acme).get().max_replicas
    client_as(staff).post(PREVIEW, form_data(max_replicas=1), HTTP_HX_REQUEST="true")
    assert Quota.objects.for_tenant(acme).get().max_replicas == before
    assert not AuditEvent.objects.for_tenant(acme).exists()
    assert ModelDeployment.objects.for_tenant(acme).get(name="chat").desired_replicas == 3


def test_it_shows_the_whole_editor_with_the_preview_without_javascript(
    running: dict[str, ModelDeployment], staff: User, client_as: Callable[[User | None], Client]
) -> None:
    response = client_as(staff).post(PREVIEW, form_data(max_replicas=5))
    assert response.status_code == 200
    page = response.content.decode()
    assert "<html" in page and 'name="max_replicas" value="5"' in page  # the values being previewed stay in the form
    assert "<strong>chat</strong>: 3 → 1 replica" in page
    refused = client_as(staff).post(PREVIEW, form_data(max_replicas=-3))
    assert refused.status_code == 422 and "has-error" in refused.content.decode()


def test_the_next_autoscale_tick_does_what_the_preview_listed(
    running: dict[str, ModelDeployment], acme: Tenant, staff: User, redis_prefix: str,
    client_as: Callable[[User | None], Client], django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    client = client_as(staff)
    preview = deployments_capped_by(Quota(tenant_id=acme.pk, max_replicas=5))
    response = client.post(URL, form_data(max_replicas=5))
    assert response.status_code == 302
    notice = "Within seconds the autoscaler scales chat down to 1 replica (from 3)."
    assert notice in client.get(response["Location"]).content.decode()
    with django_capture_on_commit_callbacks():  # the reconciles the tick asks for are not sent anywhere
        autoscale.tick()
    after = dict(ModelDeployment.objects.for_tenant(acme).values_list("name", "desired_replicas"))
    expected = {name: d.desired_replicas for name, d in running.items()} | {c.name: c.capped for c in preview}
    assert after == expected == {"chat": 1, "embed": 2, "k8s-scaled": 2, "stopped": 0}
    chat = ModelDeployment.objects.for_tenant(acme).get(name="chat")
    assert [c["status"] for c in chat.conditions if c["type"] == "CappedByQuota"] == ["True"]


def test_it_answers_a_saving_htmx_editor_with_the_editor_and_its_notice(
    running: dict[str, ModelDeployment], staff: User, client_as: Callable[[User | None], Client]
) -> None:
    response = client_as(staff).post(URL, form_data(max_replicas=5), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    page = response.content.decode()
    assert "<html" not in page
    assert 'role="status">Quota of acme saved. Within seconds the autoscaler scales chat down to 1 replica' in page
    assert 'name="max_replicas" value="5"' in page
