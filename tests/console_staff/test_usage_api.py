"""``GET /api/v1/tenants/{tenant}/usage/``: the same figures as the console, scoped to the tenant."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from quotas import reports
from quotas.models import UsageRollup
from tenants.models import Tenant

FROM = (reports.today() - timedelta(days=20)).isoformat()


@pytest.mark.parametrize("group_by", ["day", "deployment", "key"])
def test_it_reports_usage_grouped_with_totals_matching_the_rows(
    group_by: str, bob: User, acme: Tenant, acme_usage: list[UsageRollup], globex_usage: list[UsageRollup],
    api: Callable[[User | None], APIClient],
) -> None:  # fmt: skip
    response = api(bob).get(f"/api/v1/tenants/acme/usage/?from={FROM}&group_by={group_by}")
    assert response.status_code == 200
    body = response.json()
    assert body["totals"]["requests"] == sum(r.requests for r in acme_usage)
    assert sum(row["requests"] for row in body["results"]) == body["totals"]["requests"]
    assert sum(row["tokens"] for row in body["results"]) == body["totals"]["tokens"]
    assert body["from"] == FROM and body["group_by"] == group_by


def test_it_lists_every_day_of_the_range(alice: User, acme: Tenant, api: Callable[[User | None], APIClient]) -> None:
    body = api(alice).get("/api/v1/tenants/acme/usage/?from=2024-02-27&to=2024-03-01").json()
    assert [row["day"] for row in body["results"]] == ["2024-02-27", "2024-02-28", "2024-02-29", "2024-03-01"]


def test_it_names_keys_by_their_public_id(
    alice: User, acme: Tenant, acme_usage: list[UsageRollup], api: Callable[[User | None], APIClient]
) -> None:
    rows = api(alice).get(f"/api/v1/tenants/acme/usage/?from={FROM}&group_by=key").json()["results"]
    assert {row["api_key_name"] for row in rows} == {"acme-key-0", "acme-key-1", None}
    assert all("api_key_id" not in row for row in rows)


def test_it_works_with_a_read_key(acme: Tenant, key_api: Callable[[Tenant, list[str]], APIClient]) -> None:
    assert key_api(acme, ["read"]).get("/api/v1/tenants/acme/usage/").status_code == 200


def test_it_hides_another_tenants_usage(charlie: User, acme: Tenant, api: Callable[[User | None], APIClient]) -> None:
    assert api(charlie).get("/api/v1/tenants/acme/usage/").status_code == 404


@pytest.mark.parametrize("query", ["group_by=model", "from=yesterday", "from=2024-05-02&to=2024-05-01"])
def test_it_refuses_bad_parameters(
    query: str, alice: User, acme: Tenant, api: Callable[[User | None], APIClient]
) -> None:
    assert api(alice).get(f"/api/v1/tenants/acme/usage/?{query}").status_code == 400
