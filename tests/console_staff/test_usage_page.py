"""The tenant Usage page: totals, charts and tables per deployment and per key, only of its own tenant."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import User
from django.test import Client

from quotas.models import UsageRollup
from quotas.reports import month_start
from tenants.models import Tenant


def test_it_shows_the_tenants_totals_charts_and_tables(
    vera: User, acme: Tenant, acme_usage: list[UsageRollup], globex_usage: list[UsageRollup],
    client_as: Callable[[User | None], Client], django_assert_max_num_queries: Any,
) -> None:  # fmt: skip
    client = client_as(vera)
    with django_assert_max_num_queries(14):
        page = client.get("/t/acme/usage/").content.decode()
    assert f"<dd>{sum(r.requests for r in acme_usage)}</dd>" in page
    assert page.count("<svg") == 4  # requests per day, tokens per day, per deployment, per key
    assert "acme-dep-0" in page and "acme-key-1" in page
    assert "globex" not in page.split("<main", 1)[1]  # nothing of another tenant


def test_it_explains_what_to_do_when_there_is_no_usage(
    alice: User, acme: Tenant, client_as: Callable[[User | None], Client]
) -> None:
    page = client_as(alice).get("/t/acme/usage/").content.decode()
    assert "No requests between" in page and "create a key" in page


def test_it_answers_htmx_with_the_report_only(
    alice: User, acme: Tenant, acme_usage: list[UsageRollup], client_as: Callable[[User | None], Client]
) -> None:
    body = client_as(alice).get("/t/acme/usage/", HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in body and "<svg" in body and 'name="from"' in body


def test_it_paginates_deployments(alice: User, acme: Tenant, client_as: Callable[[User | None], Client]) -> None:
    # Ordered by tokens: dep-29 comes first, dep-00 last (on page 2 of 25 a page).
    UsageRollup.unscoped_objects.bulk_create(
        [
            UsageRollup(
                tenant=acme,
                minute=month_start(),
                deployment_id=n,
                deployment_name=f"dep-{n:02d}",
                requests=1,
                prompt_tokens=n + 1,
            )
            for n in range(30)
        ]
    )
    client = client_as(alice)
    first = client.get(f"/t/acme/usage/?from={month_start().date()}").content.decode()
    second = client.get(f"/t/acme/usage/?from={month_start().date()}&page=2").content.decode()
    assert "Page 1 of 2" in first and "dep-29" in first and "dep-00" not in first
    assert "dep-00" in second
