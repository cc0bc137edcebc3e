"""Batch API usage: tagged by the gateway, rolled up apart, and shown apart in reports, CSV, the API and the console."""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from controlplane.contracts import usage_events
from controlplane.contracts.redis_names import usage_stream_key
from controlplane.redis import get_redis
from deployments.models import ModelDeployment
from quotas import reports
from quotas.models import UsageRollup
from quotas.rollup import RollupConfig, parse_event, run_rollup
from tenants.models import ApiKey, Tenant
from tests.support.staff import make_deployment

pytestmark = pytest.mark.django_db

CONFIG = RollupConfig(batch_size=50, claim_idle_ms=30_000, max_seconds=30.0)
BATCH_ID = "batch_0123456789abcdef0123456789abcdef"


def usage_event(
    tenant: Tenant, key: ApiKey, deployment: ModelDeployment, ts: float, *, batch_id: str = "", **fields: Any
) -> dict[str, usage_events.Value]:
    """One usage event exactly as the gateway writes it."""
    return usage_events.as_mapping(
        usage_events.encode_event(
            request_id=fields.get("rid", uuid.uuid4().hex),
            ts=ts,
            tenant_id=tenant.pk,
            key_id=key.pk,
            deployment_id=deployment.pk,
            revision_id=None,
            status=fields.get("status", 200),
            prompt_tokens=fields.get("prompt_tokens", 10),
            completion_tokens=fields.get("completion_tokens", 5),
            latency_ms=12.0,
            ttft_ms=None,
            batch_id=batch_id,
        )
    )


# ---------------------------------------------------------------- the rollup


@pytest.fixture
def r(redis_prefix: str) -> redis.Redis:
    return get_redis()


@pytest.fixture
def stream(redis_prefix: str) -> str:
    return usage_stream_key(redis_prefix)


@pytest.fixture
def key(acme: Tenant) -> ApiKey:
    return ApiKey.issue(tenant=acme, name="k1", scopes=["inference"])[0]


@pytest.fixture
def chat(acme: Tenant) -> ModelDeployment:
    return make_deployment(acme, "chat")


def rows_by_traffic() -> dict[bool, tuple[int, int, int]]:
    return {
        row.batch: (row.requests, row.prompt_tokens, row.completion_tokens)
        for row in UsageRollup.unscoped_objects.all()
    }


@pytest.mark.parametrize(
    ("value", "batch"), [(BATCH_ID, True), ("", False), (None, False)], ids=["batch id", "empty", "missing"]
)
def test_it_reads_the_batch_field_and_takes_a_missing_one_as_interactive(
    value: str | None, batch: bool, acme: Tenant, key: ApiKey, chat: ModelDeployment
) -> None:
    # As Redis hands the fields back: every value as text.
    fields = {name: str(v) for name, v in usage_event(acme, key, chat, time.time(), batch_id=value or "").items()}
    if value is None:
        del fields[usage_events.BATCH]  # an event written before the field existed
    parsed = parse_event("1-0", fields)
    assert parsed is not None and parsed.batch is batch


def test_it_rolls_batch_lines_up_apart_from_interactive_requests(
    r: redis.Redis, stream: str, acme: Tenant, key: ApiKey, chat: ModelDeployment
) -> None:
    ts = (time.time() // 60) * 60 + 1  # one minute, one key, one deployment for every event
    events = [usage_event(acme, key, chat, ts + n, prompt_tokens=100) for n in range(3)]
    events += [usage_event(acme, key, chat, ts + n, batch_id=BATCH_ID, prompt_tokens=7) for n in range(2)]
    for e in events:
        r.xadd(stream, e)  # type: ignore[arg-type]

    stats = run_rollup(CONFIG, consumer="c1")

    assert stats.counted == 5
    assert rows_by_traffic() == {False: (3, 300, 15), True: (2, 14, 10)}


@pytest.mark.parametrize("later", [False, True], ids=["same run", "later run"])
def test_it_counts_a_batch_line_run_again_once(
    later: bool, r: redis.Redis, stream: str, acme: Tenant, key: ApiKey, chat: ModelDeployment
) -> None:
    # A line keeps its request id when it runs again (a worker died after sending it): the re-run's event counts zero.
    ts = time.time()
    first = usage_event(acme, key, chat, ts, rid="batch-line-7", batch_id=BATCH_ID, prompt_tokens=40)
    again = usage_event(acme, key, chat, ts + 90, rid="batch-line-7", batch_id=BATCH_ID, prompt_tokens=41)
    r.xadd(stream, first)  # type: ignore[arg-type]
    if later:
        assert run_rollup(CONFIG, consumer="c1").counted == 1
    r.xadd(stream, again)  # type: ignore[arg-type]

    run_rollup(CONFIG, consumer="c1")

    assert rows_by_traffic() == {True: (1, 40, 5)}


# ---------------------------------------------------------------- reports


@pytest.fixture
def period() -> reports.DateRange:
    return reports.DateRange(reports.today() - timedelta(days=2), reports.today())


@pytest.fixture
def mixed_usage(acme: Tenant, globex: Tenant, key: ApiKey, chat: ModelDeployment) -> list[UsageRollup]:
    """acme: interactive and batch in the same bucket today, batch without a key yesterday; globex: interactive."""
    midnight = datetime.combine(reports.today(), datetime.min.time(), tzinfo=UTC)
    other = make_deployment(globex, "other")
    bucket = {"tenant": acme, "api_key": key, "deployment_id": chat.pk, "deployment_name": "chat"}
    return UsageRollup.unscoped_objects.bulk_create(
        [
            UsageRollup(minute=midnight, **bucket, requests=5, errors=1, prompt_tokens=100, completion_tokens=50),
            UsageRollup(minute=midnight, **bucket, batch=True, requests=3, prompt_tokens=30, completion_tokens=20),
            UsageRollup(tenant=acme, minute=midnight - timedelta(days=1), deployment_id=chat.pk, deployment_name="chat",
                        batch=True, requests=2, prompt_tokens=7, completion_tokens=3),
            UsageRollup(tenant=globex, minute=midnight, deployment_id=other.pk, deployment_name="other",
                        requests=100, prompt_tokens=1000, completion_tokens=1000),
        ]
    )  # fmt: skip


ACME_TOTALS = {
    "requests": 10,
    "errors": 1,
    "prompt_tokens": 137,
    "completion_tokens": 73,
    "tokens": 210,
    "batch_requests": 5,
    "batch_prompt_tokens": 37,
    "batch_completion_tokens": 23,
    "batch_tokens": 60,
    "inferences": 0,
    "images": 0,
}


def test_it_totals_all_traffic_and_the_batch_share_of_it(
    acme: Tenant, mixed_usage: list[UsageRollup], period: reports.DateRange
) -> None:
    assert reports.usage_totals(period, acme) == ACME_TOTALS
    assert reports.totals_of(reports.usage_by_day(period, acme)) == ACME_TOTALS


def test_it_filters_by_traffic(acme: Tenant, mixed_usage: list[UsageRollup], period: reports.DateRange) -> None:
    batch = reports.usage_totals(period, acme, traffic="batch")
    interactive = reports.usage_totals(period, acme, traffic="interactive")
    assert (batch["requests"], batch["batch_requests"], batch["tokens"]) == (5, 5, 60)
    assert (interactive["requests"], interactive["batch_requests"], interactive["tokens"]) == (5, 0, 150)


@pytest.mark.parametrize("group_by", reports.GROUPS)
def test_it_carries_the_batch_share_in_every_grouping(
    group_by: str, acme: Tenant, mixed_usage: list[UsageRollup], period: reports.DateRange
) -> None:
    tenant = None if group_by == "tenant" else acme
    rows = list(reports.usage_grouped(period, group_by, tenant))
    assert sum(row["batch_requests"] for row in rows) == 5
    assert sum(row["batch_tokens"] for row in rows) == 60


def test_it_groups_by_traffic(acme: Tenant, mixed_usage: list[UsageRollup], period: reports.DateRange) -> None:
    rows = list(reports.usage_grouped(period, "traffic", acme))
    assert [(reports.label_of(row, "traffic"), row["requests"], row["tokens"]) for row in rows] == [
        ("interactive", 5, 150),
        ("batch", 5, 60),
    ]


def test_it_lists_days_without_usage_with_zero_batch_figures(acme: Tenant, mixed_usage: list[UsageRollup]) -> None:
    earlier = reports.DateRange(reports.today() - timedelta(days=9), reports.today() - timedelta(days=8))
    assert all(day["batch_requests"] == 0 == day["batch_tokens"] for day in reports.usage_by_day(earlier, acme))


@pytest.mark.parametrize("raw", ["Batch", "all", "interactive,batch"])
def test_it_refuses_an_unknown_traffic(raw: str) -> None:
    with pytest.raises(reports.ReportRangeError, match="interactive, batch"):
        reports.parse_traffic(raw)


# ---------------------------------------------------------------- CSV, REST and the console


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def download(client: Client, url: str) -> list[dict[str, str]]:
    response = client.get(url)
    assert response.status_code == 200
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))  # type: ignore[attr-defined]


def test_it_exports_each_days_traffic_on_its_own_row(
    vera: User, mixed_usage: list[UsageRollup], period: reports.DateRange
) -> None:
    rows = download(signed_in(vera), f"/t/acme/usage/?from={period.first}&format=csv")
    assert sorted((row["date"], row["api_key_name"], row["traffic"], row["requests"]) for row in rows) == [
        (str(period.last - timedelta(days=1)), "", "batch", "2"),
        (str(period.last), "k1", "batch", "3"),
        (str(period.last), "k1", "interactive", "5"),
    ]


def test_it_exports_the_batch_share_for_staff(
    staff: User, mixed_usage: list[UsageRollup], period: reports.DateRange
) -> None:
    rows = download(signed_in(staff), f"/staff/usage/?from={period.first}&format=csv")
    by_tenant = {(row["date"], row["tenant"]): (row["requests"], row["batch_requests"]) for row in rows}
    assert by_tenant == {
        (str(period.last - timedelta(days=1)), "acme"): ("2", "2"),
        (str(period.last), "acme"): ("8", "3"),
        (str(period.last), "globex"): ("100", "0"),
    }


def test_the_api_reports_the_batch_share(
    vera: User, mixed_usage: list[UsageRollup], period: reports.DateRange, api: Callable[[User | None], APIClient]
) -> None:
    body = api(vera).get(f"/api/v1/tenants/acme/usage/?from={period.first}&group_by=key").json()
    assert body["totals"] == ACME_TOTALS and body["traffic"] is None
    assert {row["api_key_name"]: row["batch_requests"] for row in body["results"]} == {"k1": 3, None: 2}


def test_the_api_filters_and_groups_by_traffic(
    vera: User, mixed_usage: list[UsageRollup], period: reports.DateRange, api: Callable[[User | None], APIClient]
) -> None:
    client = api(vera)
    batch = client.get(f"/api/v1/tenants/acme/usage/?from={period.first}&traffic=batch").json()
    assert batch["traffic"] == "batch"
    assert (batch["totals"]["requests"], batch["totals"]["batch_requests"]) == (5, 5)
    assert [day["requests"] for day in batch["results"]] == [0, 2, 3]
    grouped = client.get(f"/api/v1/tenants/acme/usage/?from={period.first}&group_by=traffic").json()
    assert [(row["traffic"], row["requests"]) for row in grouped["results"]] == [("interactive", 5), ("batch", 5)]


@pytest.mark.parametrize("traffic", ["everything", "BATCH", "batch\x00"])
def test_the_api_refuses_an_unknown_traffic_with_a_400(
    traffic: str, vera: User, acme: Tenant, api: Callable[[User | None], APIClient]
) -> None:
    response = api(vera).get("/api/v1/tenants/acme/usage/", {"traffic": traffic})
    assert response.status_code == 400
    assert "traffic" in response.json()["error"]["fields"]


def test_the_usage_page_shows_the_batch_share(vera: User, mixed_usage: list[UsageRollup]) -> None:
    page = signed_in(vera).get("/t/acme/usage/").content.decode()
    assert "Of which batch" in page and "5 requests, 60 tokens" in page


def test_the_usage_page_leaves_the_batch_share_out_without_batch_traffic(charlie: User, globex: Tenant) -> None:
    midnight = datetime.combine(reports.today(), datetime.min.time(), tzinfo=UTC)
    UsageRollup.unscoped_objects.create(tenant=globex, minute=midnight, requests=4)
    page = signed_in(charlie).get("/t/globex/usage/").content.decode()
    assert "<dd>4</dd>" in page and "Of which batch" not in page
