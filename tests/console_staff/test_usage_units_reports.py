"""Inferences and images in the reports, the usage API, both CSVs, the Usage page and the staff pages.

The pages give them a figure and a column each only when what they show has any; the CSVs always carry them, last.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from deployments.models import ModelDeployment
from quotas import reports
from quotas.models import UsageRollup
from tenants.models import ApiKey, Tenant
from tests.support.staff import make_deployment

INFERENCES_TH = '<th scope="col" class="num">Inferences</th>'
IMAGES_TH = '<th scope="col" class="num">Images</th>'


@pytest.fixture
def period() -> reports.DateRange:
    return reports.DateRange(reports.today() - timedelta(days=2), reports.today())


@pytest.fixture
def unit_usage(acme: Tenant, globex: Tenant) -> list[UsageRollup]:
    """acme: a v2 ranker (today and yesterday), an image painter and a chat model; globex: chat only."""
    midnight = datetime.combine(reports.today(), datetime.min.time(), tzinfo=UTC)
    key = ApiKey.issue(tenant=acme, name="k1", scopes=["inference"])[0]
    ranker, painter, chat = (make_deployment(acme, name) for name in ("ranker", "painter", "chat"))
    other = make_deployment(globex, "other")

    def on(deployment: ModelDeployment, **figures: int) -> dict[str, Any]:
        return {"deployment_id": deployment.pk, "deployment_name": deployment.name, **figures}

    return UsageRollup.unscoped_objects.bulk_create(
        [
            UsageRollup(tenant=acme, api_key=key, minute=midnight, **on(ranker, requests=4, inferences=96)),
            UsageRollup(tenant=acme, minute=midnight - timedelta(days=1), **on(ranker, requests=2, inferences=10)),
            UsageRollup(tenant=acme, api_key=key, minute=midnight, **on(painter, requests=3, images=12)),
            UsageRollup(tenant=acme, api_key=key, minute=midnight, batch=True, **on(painter, requests=1, images=4)),
            UsageRollup(tenant=acme, api_key=key, minute=midnight,
                        **on(chat, requests=5, prompt_tokens=100, completion_tokens=50)),
            UsageRollup(tenant=globex, minute=midnight, **on(other, requests=7, prompt_tokens=70)),
        ]
    )  # fmt: skip


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def download(client: Client, url: str) -> tuple[list[str], list[dict[str, str]]]:
    response = client.get(url)
    assert response.status_code == 200
    lines = b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]
    header = next(csv.reader(io.StringIO(lines)))
    return header, list(csv.DictReader(io.StringIO(lines)))


def main_of(page: str) -> str:
    return page.split("<main", 1)[1]


# ---------------------------------------------------------------- reports


def test_it_totals_inferences_and_images_of_all_traffic(
    acme: Tenant, unit_usage: list[UsageRollup], period: reports.DateRange
) -> None:
    totals = reports.usage_totals(period, acme)
    assert (totals["requests"], totals["inferences"], totals["images"]) == (15, 106, 16)
    assert reports.totals_of(reports.usage_by_day(period, acme)) == totals
    batch = reports.usage_totals(period, acme, traffic="batch")
    assert (batch["requests"], batch["inferences"], batch["images"]) == (1, 0, 4)


def test_it_groups_them_per_deployment_day_and_tenant(
    acme: Tenant, unit_usage: list[UsageRollup], period: reports.DateRange
) -> None:
    by_deployment = {
        row["deployment_name"]: (row["inferences"], row["images"])
        for row in reports.usage_grouped(period, "deployment", acme)
    }
    assert by_deployment == {"ranker": (106, 0), "painter": (0, 16), "chat": (0, 0)}
    assert [(day["inferences"], day["images"]) for day in reports.usage_by_day(period, acme)] == [
        (0, 0),
        (10, 0),
        (96, 16),
    ]
    by_tenant = {row["tenant__slug"]: row["inferences"] for row in reports.usage_grouped(period, "tenant")}
    assert by_tenant == {"acme": 106, "globex": 0}


def test_it_counts_them_this_month_per_tenant(acme: Tenant, globex: Tenant, unit_usage: list[UsageRollup]) -> None:
    month = reports.month_usage_by_tenant([acme.pk, globex.pk])
    # Yesterday may fall in last month (on the 1st): only today's rows are sure to count.
    assert month[acme.pk]["inferences"] in (96, 106) and month[acme.pk]["images"] == 16
    assert (month[globex.pk]["inferences"], month[globex.pk]["images"]) == (0, 0)


# ---------------------------------------------------------------- the usage API


def test_the_api_reports_them_per_deployment_with_totals(
    vera: User, unit_usage: list[UsageRollup], period: reports.DateRange, api: Callable[[User | None], APIClient]
) -> None:
    body = api(vera).get(f"/api/v1/tenants/acme/usage/?from={period.first}&group_by=deployment").json()
    assert (body["totals"]["inferences"], body["totals"]["images"]) == (106, 16)
    rows = {row["deployment"]: (row["requests"], row["inferences"], row["images"]) for row in body["results"]}
    assert rows == {"ranker": (6, 106, 0), "painter": (4, 0, 16), "chat": (5, 0, 0)}


def test_the_api_reports_them_per_day_with_zeros_on_quiet_days(
    vera: User, unit_usage: list[UsageRollup], period: reports.DateRange, api: Callable[[User | None], APIClient]
) -> None:
    body = api(vera).get(f"/api/v1/tenants/acme/usage/?from={period.first}").json()
    assert [(row["day"], row["inferences"], row["images"]) for row in body["results"]] == [
        (str(period.first), 0, 0),
        (str(period.first + timedelta(days=1)), 10, 0),
        (str(period.last), 96, 16),
    ]


def test_the_api_shows_a_tenant_only_its_own(
    charlie: User, unit_usage: list[UsageRollup], period: reports.DateRange, api: Callable[[User | None], APIClient]
) -> None:
    body = api(charlie).get(f"/api/v1/tenants/globex/usage/?from={period.first}&group_by=deployment").json()
    assert [(row["deployment"], row["inferences"], row["images"]) for row in body["results"]] == [("other", 0, 0)]


def test_the_api_schema_documents_them(api: Callable[[User | None], APIClient]) -> None:
    schema = api(None).get("/api/schema/?format=json").json()
    figures = schema["components"]["schemas"]["UsageFigures"]
    assert {"inferences", "images"} <= set(figures["required"])
    assert figures["properties"]["inferences"]["type"] == "integer"


# ---------------------------------------------------------------- CSV


def test_the_tenant_csv_appends_them_after_the_columns_readers_know(
    vera: User, unit_usage: list[UsageRollup], period: reports.DateRange
) -> None:
    header, rows = download(signed_in(vera), f"/t/acme/usage/?from={period.first}&format=csv")
    assert header == [
        "date", "deployment", "api_key_id", "api_key_name", "traffic",
        "requests", "errors", "prompt_tokens", "completion_tokens", "tokens", "inferences", "images",
    ]  # fmt: skip
    per_deployment: dict[str, tuple[int, int]] = {}
    for row in rows:
        inferences, images = per_deployment.get(row["deployment"], (0, 0))
        per_deployment[row["deployment"]] = (inferences + int(row["inferences"]), images + int(row["images"]))
    assert per_deployment == {"ranker": (106, 0), "painter": (0, 16), "chat": (0, 0)}


def test_the_staff_csv_appends_them_after_the_batch_columns(
    staff: User, unit_usage: list[UsageRollup], period: reports.DateRange
) -> None:
    header, rows = download(signed_in(staff), f"/staff/usage/?from={period.first}&format=csv")
    assert header == [
        "date", "tenant", "tenant_name",
        "requests", "errors", "prompt_tokens", "completion_tokens", "tokens",
        "batch_requests", "batch_prompt_tokens", "batch_completion_tokens", "batch_tokens",
        "inferences", "images",
    ]  # fmt: skip
    by_day = {(row["date"], row["tenant"]): (row["inferences"], row["images"]) for row in rows}
    assert by_day == {
        (str(period.last - timedelta(days=1)), "acme"): ("10", "0"),
        (str(period.last), "acme"): ("96", "16"),
        (str(period.last), "globex"): ("0", "0"),
    }


# ---------------------------------------------------------------- the console


def test_the_usage_page_shows_them_beside_requests_and_tokens(vera: User, unit_usage: list[UsageRollup]) -> None:
    page = main_of(signed_in(vera).get("/t/acme/usage/").content.decode())
    assert "<dt>Inferences</dt><dd>106</dd>" in page and "<dt>Images</dt><dd>16</dd>" in page
    assert page.count(INFERENCES_TH) == 2 and page.count(IMAGES_TH) == 2  # per deployment and per key
    ranker_row = next(line for line in page.splitlines() if '<th scope="row">ranker</th>' in line)
    assert '<td class="num">106</td><td class="num">0</td></tr>' in ranker_row


def test_the_usage_page_leaves_them_out_when_the_tenant_has_none(charlie: User, unit_usage: list[UsageRollup]) -> None:
    page = main_of(signed_in(charlie).get("/t/globex/usage/").content.decode())
    assert "<dd>7</dd>" in page  # the page has usage, just none of these
    assert "Inferences" not in page and "Images" not in page


def test_the_usage_page_shows_only_the_one_a_tenant_has(
    charlie: User, globex: Tenant, unit_usage: list[UsageRollup]
) -> None:
    midnight = datetime.combine(reports.today(), datetime.min.time(), tzinfo=UTC)
    UsageRollup.unscoped_objects.create(tenant=globex, minute=midnight, requests=1, images=3)
    page = main_of(signed_in(charlie).get("/t/globex/usage/").content.decode())
    assert "<dt>Images</dt><dd>3</dd>" in page and IMAGES_TH in page
    assert "Inferences" not in page


def test_the_staff_usage_report_shows_them_per_tenant(staff: User, unit_usage: list[UsageRollup]) -> None:
    page = main_of(signed_in(staff).get("/staff/usage/").content.decode())
    assert "<dt>Inferences</dt><dd>106</dd>" in page and "<dt>Images</dt><dd>16</dd>" in page
    assert INFERENCES_TH in page and IMAGES_TH in page
    assert '<td class="num">106</td><td class="num">16</td></tr>' in page  # acme's row


def test_the_staff_tenants_page_shows_them_this_month(staff: User, unit_usage: list[UsageRollup]) -> None:
    page = main_of(signed_in(staff).get("/staff/").content.decode())
    assert "Inferences this month" in page and "Images this month" in page
    assert '<td class="num">16</td>' in page  # acme's images (today's rows are always this month)


def test_the_staff_pages_leave_them_out_when_no_tenant_has_any(staff: User, globex: Tenant) -> None:
    midnight = datetime.combine(reports.today(), datetime.min.time(), tzinfo=UTC)
    UsageRollup.unscoped_objects.create(tenant=globex, minute=midnight, requests=4, prompt_tokens=9)
    client = signed_in(staff)
    usage = main_of(client.get("/staff/usage/").content.decode())
    tenants = main_of(client.get("/staff/").content.decode())
    assert "<dd>4</dd>" in usage and "Inferences" not in usage and "Images" not in usage
    assert "this month" in tenants and "Inferences" not in tenants and "Images" not in tenants
