"""The report queries: every total equals the sum of the UsageRollup rows in the range, however it is grouped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from quotas import reports
from quotas.models import UsageRollup
from tenants.models import Tenant

FIELDS = ("requests", "errors", "prompt_tokens", "completion_tokens")


def WHOLE_SEED() -> reports.DateRange:
    """A range covering every seeded row (the seed spans the last 10 days)."""
    return reports.DateRange(reports.today() - timedelta(days=20), reports.today())


def expected(rows: list[UsageRollup], period: reports.DateRange, tenant: Tenant | None = None) -> dict[str, int]:
    chosen = [r for r in rows if period.start <= r.minute < period.end and (tenant is None or r.tenant_id == tenant.pk)]
    sums = {f: sum(getattr(r, f) for r in chosen) for f in FIELDS}
    return {**sums, "tokens": sums["prompt_tokens"] + sums["completion_tokens"]}


@pytest.fixture
def period() -> reports.DateRange:
    """The last 5 days: the seeded 10 days straddle it, so rows on both sides of the range exist."""
    return reports.parse_range((reports.today() - timedelta(days=4)).isoformat(), reports.today().isoformat())


def totals(period: reports.DateRange, tenant: Tenant | None = None) -> dict[str, int]:
    """The report's totals of all traffic (the batch share beside them has tests of its own)."""
    figures = reports.usage_totals(period, tenant)
    return {name: figures[name] for name in reports.METRICS}


def test_it_totals_a_tenant_as_the_sum_of_its_rows(
    acme: Tenant, acme_usage: list[UsageRollup], globex_usage: list[UsageRollup], period: reports.DateRange
) -> None:
    assert totals(period, acme) == expected(acme_usage, period)
    assert (
        expected(acme_usage, period)["requests"] < expected(acme_usage, WHOLE_SEED())["requests"]
    )  # the range really leaves rows out


def test_it_totals_every_tenant_for_staff(
    acme_usage: list[UsageRollup], globex_usage: list[UsageRollup], period: reports.DateRange
) -> None:
    assert totals(period) == expected(acme_usage + globex_usage, period)


@pytest.mark.parametrize("group_by", ["day", "deployment", "key", "tenant"])
def test_it_groups_without_losing_or_adding_anything(
    group_by: str, acme: Tenant, acme_usage: list[UsageRollup], globex_usage: list[UsageRollup],
    period: reports.DateRange,
) -> None:  # fmt: skip
    tenant = None if group_by == "tenant" else acme
    rows = list(reports.usage_grouped(period, group_by, tenant))
    want = expected(acme_usage + globex_usage, period, tenant)
    assert {f: sum(r[f] for r in rows) for f in (*FIELDS, "tokens")} == want
    assert all(r["tokens"] == r["prompt_tokens"] + r["completion_tokens"] for r in rows)


def test_it_sums_each_day_from_its_own_rows(
    acme: Tenant, acme_usage: list[UsageRollup], period: reports.DateRange
) -> None:
    days = reports.usage_by_day(period, acme)
    assert [d["day"] for d in days] == period.days
    for day in days:
        one_day = reports.DateRange(day["day"], day["day"])
        assert day["requests"] == expected(acme_usage, one_day)["requests"]


def test_it_counts_keys_and_deployments_separately(acme: Tenant, acme_usage: list[UsageRollup]) -> None:
    period = WHOLE_SEED()
    by_key = {r["api_key__key_id"]: r["requests"] for r in reports.usage_grouped(period, "key", acme)}
    for key_id, requests in by_key.items():
        assert requests == sum(r.requests for r in acme_usage if (r.api_key.key_id if r.api_key else None) == key_id)
    by_deployment = {r["deployment_name"]: r["tokens"] for r in reports.usage_grouped(period, "deployment", acme)}
    assert set(by_deployment) == {r.deployment_name for r in acme_usage}


def test_it_uses_utc_day_boundaries(acme: Tenant) -> None:
    day = reports.today() - timedelta(days=1)
    midnight = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    for minute, requests in ((midnight - timedelta(minutes=1), 1), (midnight, 10), (midnight + timedelta(days=1), 100)):
        UsageRollup.unscoped_objects.create(tenant=acme, minute=minute, requests=requests)
    assert reports.usage_totals(reports.DateRange(day, day), acme)["requests"] == 10


@pytest.mark.parametrize(
    ("raw_from", "raw_to", "message"),
    [("yesterday", None, "YYYY-MM-DD"), ("2024-02-02", "2024-02-01", "after"), ("2020-01-01", "2024-01-01", "366")],
)
def test_it_refuses_bad_ranges(raw_from: str, raw_to: str | None, message: str) -> None:
    with pytest.raises(reports.ReportRangeError, match=message):
        reports.parse_range(raw_from, raw_to)


def test_it_defaults_to_the_last_thirty_days() -> None:
    period = reports.parse_range(None, None)
    assert period.last == reports.today()
    assert len(period.days) == reports.DEFAULT_RANGE_DAYS
