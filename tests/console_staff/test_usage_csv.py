"""CSV downloads parse as CSV and their totals match the database."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import timedelta

from django.contrib.auth.models import User
from django.db.models import Sum
from django.test import Client

from quotas import reports
from quotas.csv_export import safe_cell
from quotas.models import UsageRollup
from tenants.models import ApiKey, Tenant

NUMBERS = ("requests", "errors", "prompt_tokens", "completion_tokens", "tokens")


def download(client: Client, url: str) -> list[dict[str, str]]:
    response = client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith("attachment;")
    body = b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]
    return list(csv.DictReader(io.StringIO(body)))


def database_totals(**filters: object) -> dict[str, int]:
    sums = UsageRollup.unscoped_objects.filter(**filters).aggregate(
        requests=Sum("requests"), errors=Sum("errors"), prompt_tokens=Sum("prompt_tokens"),
        completion_tokens=Sum("completion_tokens"),
    )  # fmt: skip
    return {**sums, "tokens": sums["prompt_tokens"] + sums["completion_tokens"]}


def test_it_exports_staff_usage_whose_totals_match_the_database(
    staff: User, acme_usage: list[UsageRollup], globex_usage: list[UsageRollup],
    client_as: Callable[[User | None], Client],
) -> None:  # fmt: skip
    first = reports.today() - timedelta(days=6)
    rows = download(client_as(staff), f"/staff/usage/?from={first}&to={reports.today()}&format=csv")
    period = reports.DateRange(first, reports.today())
    want = database_totals(minute__gte=period.start, minute__lt=period.end)
    assert {name: sum(int(row[name]) for row in rows) for name in NUMBERS} == want
    assert {row["tenant"] for row in rows} == {"acme", "globex"}
    assert len(rows) == len({(row["date"], row["tenant"]) for row in rows})  # one row per day and tenant
    for row in rows:
        assert int(row["tokens"]) == int(row["prompt_tokens"]) + int(row["completion_tokens"])


def test_it_exports_a_tenants_usage_per_day_deployment_and_key(
    bob: User, acme: Tenant, acme_usage: list[UsageRollup], globex_usage: list[UsageRollup],
    client_as: Callable[[User | None], Client],
) -> None:  # fmt: skip
    first = reports.today() - timedelta(days=20)  # before every seeded row
    rows = download(client_as(bob), f"/t/acme/usage/?from={first}&format=csv")
    assert {name: sum(int(row[name]) for row in rows) for name in NUMBERS} == database_totals(tenant=acme)
    assert {row["deployment"] for row in rows} == {"acme-dep-0", "acme-dep-1"}
    keys = set(ApiKey.objects.for_tenant(acme).values_list("key_id", flat=True))
    assert {row["api_key_id"] for row in rows} == keys | {""}  # "" = requests whose key was deleted


def test_it_keeps_the_range_in_the_download_link(
    alice: User, acme: Tenant, client_as: Callable[[User | None], Client]
) -> None:
    page = client_as(alice).get("/t/acme/usage/?from=2024-01-01&to=2024-01-31").content.decode()
    assert "?from=2024-01-01&amp;to=2024-01-31&amp;format=csv" in page


def test_it_defuses_names_a_spreadsheet_would_run_as_formulas() -> None:
    assert safe_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert safe_cell("@sum") == "'@sum"
    assert safe_cell("chat-small") == "chat-small"
    assert safe_cell(-5) == -5
