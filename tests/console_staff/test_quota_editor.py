"""Staff edit a tenant's quota through tenants.services.update_quota: saved and audited, or refused inline."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.forms.models import model_to_dict
from django.test import Client

from quotas.admin import QuotaAdmin
from quotas.api import QuotaSerializer
from quotas.console import QuotaForm
from quotas.models import QUOTA_FIELDS, Quota
from tenants.models import AuditEvent, Tenant

URL = "/staff/tenants/acme/quota/"


def form_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "max_deployments": 10, "max_replicas": 8, "requests_per_minute": 600, "tokens_per_minute": "",
        "max_concurrent_requests": 64, "monthly_token_budget": 50_000_000, "batch_requests_per_minute": 6000,
        "batch_tokens_per_minute": 2_000_000, "cpu_cores": 64, "memory_gib": 512,
        "max_open_batches": 10, "max_batch_queued_lines": 200_000, "gpus_nvidia-h100": 8, "gpus_nvidia-l4": "",
    }  # fmt: skip
    data.update(overrides)
    return data


def stored(tenant: Tenant) -> dict[str, Any]:
    return model_to_dict(Quota.objects.for_tenant(tenant).get())


def test_it_shows_the_current_quota(staff: User, acme: Tenant, client_as: Callable[[User | None], Client]) -> None:
    Quota.objects.for_tenant(acme).update(gpus={"nvidia-l4": 3}, max_deployments=17)
    page = client_as(staff).get(URL).content.decode()
    assert 'name="max_deployments" value="17"' in page
    assert 'name="gpus_nvidia-l4" value="3"' in page


def test_it_saves_a_quota_and_audits_the_change(
    staff: User, acme: Tenant, client_as: Callable[[User | None], Client]
) -> None:
    client = client_as(staff)
    response = client.post(URL, form_data(max_deployments=25))
    assert response.status_code == 302
    assert "Quota of acme saved." in client.get(response["Location"]).content.decode()
    quota = Quota.objects.for_tenant(acme).get()
    assert quota.max_deployments == 25
    assert quota.gpus == {"nvidia-h100": 8}
    assert quota.tokens_per_minute is None  # empty = unlimited
    event = AuditEvent.objects.for_tenant(acme).get(action="quota.update")
    assert event.actor_id == staff.pk
    assert event.changes["max_deployments"] == [10, 25]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("cpu_cores", 0, "greater than or equal to 1"),  # the model's MinValueValidator, via the service
        ("max_replicas", -1, "greater than or equal to 0"),  # PositiveIntegerField's own validator
        ("gpus_nvidia-h100", -2, "non-negative integer"),  # validate_gpu_map, shown on the GPU type it names
        ("max_deployments", "lots", "Enter a whole number"),  # the form's own type check
        ("max_deployments", 2**40, "less than or equal to"),  # would overflow the integer column
    ],
)
def test_it_shows_validation_errors_inline_and_changes_nothing(
    field: str, value: Any, message: str, staff: User, acme: Tenant, client_as: Callable[[User | None], Client]
) -> None:
    before = stored(acme)
    response = client_as(staff).post(URL, form_data(**{field: value}))
    assert response.status_code == 422
    page = response.content.decode()
    field_html = page.split(f'name="{field}"', 1)[0].rsplit('<div class="field', 1)[1]
    assert "has-error" in field_html.split(">", 1)[0]  # the error sits on the field's own wrapper
    assert message in page
    assert f'value="{value}"' in page  # the input is kept
    assert stored(acme) == before
    assert not AuditEvent.objects.for_tenant(acme).filter(action="quota.update").exists()


def test_it_answers_htmx_with_the_form_only(
    staff: User, acme: Tenant, client_as: Callable[[User | None], Client]
) -> None:
    response = client_as(staff).post(URL, form_data(cpu_cores=0), HTTP_HX_REQUEST="true")
    assert response.status_code == 422
    assert "<html" not in response.content.decode() and "has-error" in response.content.decode()


def test_it_shows_every_quota_field_in_order_with_its_label(
    staff: User, acme: Tenant, client_as: Callable[[User | None], Client]
) -> None:
    page = client_as(staff).get(URL).content.decode()
    labels = re.findall(r'<label for="id_([^"]+)">([^<]*):</label>', page)
    assert labels == [
        ("max_deployments", "Max deployments"),
        ("max_replicas", "Max replicas"),
        ("requests_per_minute", "Requests per minute"),
        ("tokens_per_minute", "Tokens per minute"),
        ("max_concurrent_requests", "Max concurrent requests"),
        ("monthly_token_budget", "Monthly token budget"),
        ("batch_requests_per_minute", "Batch requests per minute"),
        ("batch_tokens_per_minute", "Batch tokens per minute"),
        ("cpu_cores", "CPU cores (Kubernetes namespace)"),
        ("memory_gib", "Memory GiB (Kubernetes namespace)"),
        ("max_open_batches", "Open batches"),
        ("max_batch_queued_lines", "Queued batch lines"),
        *((f"gpus_{gpu_type}", f"{gpu_type} GPUs") for gpu_type in settings.FRONTDOOR_GPU_TYPES),
    ]


def test_the_editor_the_api_and_the_admin_cover_the_same_quota_fields() -> None:
    assert {*QuotaForm.SCALAR_FIELDS, "gpus"} == set(QUOTA_FIELDS)
    assert set(QuotaForm.base_fields) == set(QuotaForm.SCALAR_FIELDS)  # a new quota field gets its form field
    assert set(QuotaSerializer.Meta.fields) == {"tenant", *QUOTA_FIELDS, "updated_at"}
    assert QuotaAdmin.list_display == [
        "tenant",
        "max_deployments",
        "max_replicas",
        "requests_per_minute",
        "tokens_per_minute",
        "max_concurrent_requests",
        "monthly_token_budget",
        "batch_requests_per_minute",
        "batch_tokens_per_minute",
        "max_open_batches",
        "max_batch_queued_lines",
        "updated_at",
    ]
