"""Usage, allocation, SLO and capacity figures: the ONE place that aggregates them (console, CSV and REST).

Every function aggregates in SQL (``GROUP BY``) and returns plain dicts, so a page shows any number of tenants or
deployments in a fixed number of queries. Usage comes from ``UsageRollup`` (per minute, UTC; docs/usage.md); days
are UTC days. Callers pass a tenant to scope a figure, or ``None`` deliberately for the staff pages.

Usage figures cover all traffic; beside them, the ``batch_*`` figures say how much of it came from the Batch API.
The usage queries take ``traffic`` (``interactive`` or ``batch``) to count one kind only. ``inferences`` and
``images`` count what tokens do not measure: Open Inference Protocol inferences asked and images answered.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, ExpressionWrapper, F, FloatField, Max, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from deployments.models import ModelDeployment, SloSample
from quotas.models import UsageRollup
from tenants.models import Tenant

DEFAULT_RANGE_DAYS = 30
MAX_RANGE_DAYS = 366
GROUPS = ("day", "deployment", "key", "tenant", "traffic")
METRICS = ("requests", "errors", "prompt_tokens", "completion_tokens", "tokens")
# The share of each usage figure that came from Batch API lines (already counted in the figures above).
BATCH_METRICS = ("batch_requests", "batch_prompt_tokens", "batch_completion_tokens", "batch_tokens")
# Units of work besides tokens, of all traffic: Open Inference Protocol inferences asked, images answered. Kept apart
# from METRICS so the CSVs can append them after the columns existing readers know.
UNIT_METRICS = ("inferences", "images")
FIGURES = (*METRICS, *BATCH_METRICS, *UNIT_METRICS)
INTERACTIVE, BATCH = "interactive", "batch"
TRAFFIC = (INTERACTIVE, BATCH)
SLO_WINDOW = timedelta(days=30)


class ReportRangeError(ValueError):
    """A date range (or grouping, or traffic) a report cannot use; the message says what to send instead."""


@dataclass(frozen=True)
class DateRange:
    """Whole UTC days from ``first`` to ``last``, both included."""

    first: date
    last: date

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time.min, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """Exclusive end: midnight after ``last``."""
        return datetime.combine(self.last + timedelta(days=1), time.min, tzinfo=UTC)

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]

    def as_query(self) -> dict[str, str]:
        return {"from": self.first.isoformat(), "to": self.last.isoformat()}


def today() -> date:
    return timezone.now().astimezone(UTC).date()


def month_start() -> datetime:
    """Midnight UTC on the first of this month (the window of monthly budgets)."""
    return datetime.combine(today().replace(day=1), time.min, tzinfo=UTC)


def parse_range(raw_from: str | None, raw_to: str | None) -> DateRange:
    """``from``/``to`` as ISO dates (``YYYY-MM-DD``); missing ends default to the last 30 days up to today."""

    def parse(raw: str | None, name: str) -> date | None:
        if not raw:
            return None
        try:
            return date.fromisoformat(raw.strip())
        except ValueError as exc:
            raise ReportRangeError(f"'{name}' must be a date as YYYY-MM-DD, got {raw!r}") from exc

    last = parse(raw_to, "to") or today()
    first = parse(raw_from, "from") or last - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    if first > last:
        raise ReportRangeError(f"'from' ({first}) is after 'to' ({last})")
    if (last - first).days + 1 > MAX_RANGE_DAYS:
        raise ReportRangeError(f"a report covers at most {MAX_RANGE_DAYS} days; narrow 'from'/'to'")
    return DateRange(first, last)


def parse_traffic(raw: str | None) -> str | None:
    """``traffic`` as ``interactive`` or ``batch``; missing or empty means all traffic (None)."""
    if not raw:
        return None
    if raw not in TRAFFIC:
        raise ReportRangeError(f"'traffic' must be one of {', '.join(TRAFFIC)}, got {raw!r}")
    return raw


def traffic_of(batch: bool) -> str:
    """A rollup's ``batch`` flag as the traffic it counts."""
    return BATCH if batch else INTERACTIVE


# ---------------------------------------------------------------- usage


def _rollups(period: DateRange, tenant: Tenant | int | None, traffic: str | None = None) -> QuerySet[UsageRollup]:
    rows = UsageRollup.objects.unscoped() if tenant is None else UsageRollup.objects.for_tenant(tenant)
    rows = rows.filter(minute__gte=period.start, minute__lt=period.end)
    if traffic is not None:
        rows = rows.filter(batch=traffic == BATCH)
    return rows


def _sums() -> dict[str, Any]:
    batch = Q(batch=True)
    # The batch sums come first: once ``requests`` (and the others) name a sum, the column is out of reach.
    return {
        "batch_requests": Coalesce(Sum("requests", filter=batch), Value(0)),
        "batch_prompt_tokens": Coalesce(Sum("prompt_tokens", filter=batch), Value(0)),
        "batch_completion_tokens": Coalesce(Sum("completion_tokens", filter=batch), Value(0)),
        "requests": Coalesce(Sum("requests"), Value(0)),
        "errors": Coalesce(Sum("errors"), Value(0)),
        "prompt_tokens": Coalesce(Sum("prompt_tokens"), Value(0)),
        "completion_tokens": Coalesce(Sum("completion_tokens"), Value(0)),
        "inferences": Coalesce(Sum("inferences"), Value(0)),
        "images": Coalesce(Sum("images"), Value(0)),
    }


def _with_tokens(row: Any) -> dict[str, Any]:
    """A ``values()`` row as a plain dict with ``tokens`` and ``batch_tokens`` (prompt + completion) added."""
    plain: dict[str, Any] = dict(row)
    plain["tokens"] = plain["prompt_tokens"] + plain["completion_tokens"]
    plain["batch_tokens"] = plain["batch_prompt_tokens"] + plain["batch_completion_tokens"]
    return plain


def _plain(rows: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """``values()`` rows typed as plain dicts (the stubs type them as closed TypedDicts)."""
    for row in rows:
        yield dict(row)


def usage_totals(
    period: DateRange, tenant: Tenant | int | None = None, *, traffic: str | None = None
) -> dict[str, int]:
    """Requests, errors, tokens, inferences and images over the range, and the batch share of them (one query)."""
    return _with_tokens(_rollups(period, tenant, traffic).aggregate(**_sums()))


# The columns each grouping selects (besides the sums) and how its rows are ordered.
_GROUP_COLUMNS: dict[str, tuple[list[str], list[str]]] = {
    "day": (["day"], ["day"]),
    "deployment": (["deployment_id"], ["-tokens", "deployment_id"]),
    "key": (["api_key_id", "api_key__name", "api_key__key_id"], ["-tokens", "api_key_id"]),
    "tenant": (["tenant_id", "tenant__slug", "tenant__name"], ["-tokens", "tenant__slug"]),
    "traffic": (["batch"], ["batch"]),  # interactive first
}


def usage_grouped(
    period: DateRange, group_by: str, tenant: Tenant | int | None = None, *, traffic: str | None = None
) -> QuerySet[Any]:
    """A ``values()`` queryset of sums per day, deployment, key, tenant or traffic (lazy, so it paginates in SQL).

    Per deployment, the name is the latest one seen (rollups keep the name after the deployment is deleted). Per
    traffic, a row's ``batch`` says which kind it counts (``traffic_of``).
    """
    if group_by not in _GROUP_COLUMNS:
        raise ReportRangeError(f"'group_by' must be one of {', '.join(GROUPS)}, got {group_by!r}")
    columns, ordering = _GROUP_COLUMNS[group_by]
    rows: QuerySet[Any] = _rollups(period, tenant, traffic)
    if group_by == "day":
        rows = rows.annotate(day=TruncDate("minute", tzinfo=UTC))
    extra: dict[str, Any] = {}
    if group_by == "deployment":
        extra["deployment_name"] = Max("deployment_name")
    return (
        rows.values(*columns)
        .annotate(**_sums(), **extra)
        # Over the sums just annotated (their names shadow the columns), so ordering by tokens stays in SQL.
        .annotate(
            tokens=F("prompt_tokens") + F("completion_tokens"),
            batch_tokens=F("batch_prompt_tokens") + F("batch_completion_tokens"),
        )
        .order_by(*ordering)
    )


def label_of(row: dict[str, Any], group_by: str) -> str:
    """A human label for one grouped row."""
    if group_by == "day":
        return row["day"].isoformat()
    if group_by == "deployment":
        return row.get("deployment_name") or (f"#{row['deployment_id']}" if row["deployment_id"] else "(no deployment)")
    if group_by == "key":
        if row["api_key_id"] is None:
            return "(deleted or no key)"
        return f"{row['api_key__name']} ({row['api_key__key_id']})"
    if group_by == "traffic":
        return traffic_of(row["batch"])
    return str(row["tenant__slug"])


def usage_by_day(
    period: DateRange, tenant: Tenant | int | None = None, *, traffic: str | None = None
) -> list[dict[str, Any]]:
    """One row per day of the range, days without usage included as zeros (charts need every day)."""
    found = {row["day"]: row for row in usage_grouped(period, "day", tenant, traffic=traffic)}
    zero = dict.fromkeys(FIGURES, 0)
    return [{"day": day, **(found.get(day) or zero)} for day in period.days]


def totals_of(days: list[dict[str, Any]]) -> dict[str, int]:
    """Totals of ``usage_by_day`` rows: every day of the range is there, so this equals ``usage_totals`` (no query)."""
    return {metric: sum(int(day[metric]) for day in days) for metric in FIGURES}


def usage_by_day_and_tenant(period: DateRange) -> Iterator[dict[str, Any]]:
    """Every (day, tenant) with usage, ordered by day then tenant slug: the staff CSV's rows."""
    rows = (
        _rollups(period, None)
        .annotate(day=TruncDate("minute", tzinfo=UTC))
        .values("day", "tenant_id", "tenant__slug", "tenant__name")
        .annotate(**_sums())
        .order_by("day", "tenant__slug")
    )
    for row in rows.iterator(chunk_size=2000):
        yield _with_tokens(row)


def usage_detail_rows(period: DateRange, tenant: Tenant | int) -> Iterator[dict[str, Any]]:
    """Every (day, deployment, key, traffic) of one tenant with usage: the tenant CSV's rows, each with ``traffic``."""
    rows = (
        _rollups(period, tenant)
        .annotate(day=TruncDate("minute", tzinfo=UTC))
        .values("day", "deployment_id", "api_key_id", "api_key__name", "api_key__key_id", "batch")
        .annotate(**_sums(), deployment_name=Max("deployment_name"))
        .order_by("day", "deployment_id", "api_key_id", "batch")
    )
    for row in rows.iterator(chunk_size=2000):
        yield {**_with_tokens(row), "traffic": traffic_of(row["batch"])}


def month_usage_by_tenant(tenant_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """Requests, tokens, inferences and images this month per tenant, batch lines included (one query)."""
    rows = (
        UsageRollup.objects.unscoped()
        .filter(tenant_id__in=list(tenant_ids), minute__gte=month_start())
        .values("tenant_id")
        .annotate(**_sums())
        .order_by()
    )
    return {row["tenant_id"]: _with_tokens(row) for row in _plain(rows)}


# ---------------------------------------------------------------- GPUs: quota, allocation, capacity


def _held_deployments() -> QuerySet[ModelDeployment]:
    """Deployments that hold GPUs (being deleted ones do not count, as in quota admission)."""
    return (
        ModelDeployment.objects.unscoped()
        .exclude(desired_state=ModelDeployment.DesiredState.DELETING)
        .filter(gpu_count__gt=0)
        .exclude(gpu_type="")
    )


def _gpu_sums() -> dict[str, Any]:
    return {
        # allocated (max): what quota admission counts; in use (desired): what the autoscaler asks for now.
        "allocated": Coalesce(Sum(F("gpu_count") * F("max_replicas")), Value(0)),
        "in_use": Coalesce(Sum(F("gpu_count") * F("desired_replicas")), Value(0)),
    }


def gpus_by_tenant(tenant_ids: Iterable[int]) -> dict[int, dict[str, dict[str, int]]]:
    """``{tenant id: {gpu type: {"allocated": n, "in_use": m}}}`` (one query)."""
    rows = (
        _held_deployments()
        .filter(tenant_id__in=list(tenant_ids))
        .values("tenant_id", "gpu_type")
        .annotate(**_gpu_sums())
        .order_by()
    )
    result: dict[int, dict[str, dict[str, int]]] = {}
    for row in _plain(rows):
        result.setdefault(row["tenant_id"], {})[row["gpu_type"]] = {
            "allocated": row["allocated"],
            "in_use": row["in_use"],
        }
    return result


def gpu_rows(quota_gpus: dict[str, int], held: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """Per GPU type of a tenant: quota, allocated (max) and in use (desired), for a table cell."""
    rows = []
    for gpu_type in sorted(set(quota_gpus) | set(held)):
        figures = held.get(gpu_type, {"allocated": 0, "in_use": 0})
        quota = int(quota_gpus.get(gpu_type, 0))
        rows.append({"gpu_type": gpu_type, "quota": quota, **figures, "over": figures["allocated"] > quota})
    return rows


def cluster_gpu_capacity() -> dict[str, int]:
    """GPUs the cluster has, by type (``FRONTDOOR_CLUSTER_GPU_CAPACITY``, validated in settings)."""
    return dict(settings.FRONTDOOR_CLUSTER_GPU_CAPACITY)


def quota_gpu_totals() -> dict[str, int]:
    """GPUs granted by all tenants' quotas together, by type (summed in SQL over the JSON maps)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT g.key, SUM(g.value::bigint) FROM quotas_quota q, jsonb_each_text(q.gpus) g GROUP BY g.key"
        )
        return {str(key): int(total) for key, total in cursor.fetchall()}


def capacity_rows() -> list[dict[str, Any]]:
    """Per GPU type: cluster capacity, quota granted, allocated (max), in use (desired), and what is left."""
    capacity = cluster_gpu_capacity()
    granted = quota_gpu_totals()
    totals = _held_deployments().values("gpu_type").annotate(**_gpu_sums()).order_by()
    held = {row["gpu_type"]: row for row in _plain(totals)}
    rows = []
    for gpu_type in sorted(set(capacity) | set(granted) | set(held)):
        cap = capacity.get(gpu_type)
        allocated = int(held.get(gpu_type, {}).get("allocated", 0))
        in_use = int(held.get(gpu_type, {}).get("in_use", 0))
        rows.append(
            {
                "gpu_type": gpu_type,
                "capacity": cap,
                "granted": granted.get(gpu_type, 0),
                "allocated": allocated,
                "in_use": in_use,
                "free": None if cap is None else cap - in_use,
                "allocated_percent": None if not cap else round(100 * allocated / cap),
                "in_use_percent": None if not cap else round(100 * in_use / cap),
                "overcommitted": cap is not None and allocated > cap,
            }
        )
    return rows


# ---------------------------------------------------------------- SLO attainment


def slo_attainment_by_tenant(tenant_ids: Sequence[int], since: datetime | None = None) -> dict[int, dict[str, Any]]:
    """Per tenant: the fraction of 5-minute SLO intervals (with traffic) within the deployment's objectives.

    Only deployments with an objective count (p95 latency and/or error rate); an interval meets the SLO when its
    p95 is at most the objective and its errors are at most ``slo_error_rate`` × requests. Tenants without such
    intervals are absent (shown as "no data"). One query.
    """
    since = since or timezone.now() - SLO_WINDOW
    error_budget = ExpressionWrapper(F("requests") * F("deployment__slo_error_rate"), output_field=FloatField())
    within = (Q(deployment__slo_p95_latency_ms__isnull=True) | Q(p95_ms__lte=F("deployment__slo_p95_latency_ms"))) & (
        Q(deployment__slo_error_rate__isnull=True) | Q(errors__lte=error_budget)
    )
    rows = (
        SloSample.objects.unscoped()
        .filter(
            tenant_id__in=list(tenant_ids),
            revision__isnull=True,
            resolution=SloSample.Resolution.FIVE_MINUTES,
            interval_start__gte=since,
            requests__gt=0,
        )
        .filter(Q(deployment__slo_p95_latency_ms__isnull=False) | Q(deployment__slo_error_rate__isnull=False))
        .values("tenant_id")
        .annotate(intervals=Count("id"), met=Count("id", filter=within))
        .order_by()
    )
    return {
        row["tenant_id"]: {"intervals": row["intervals"], "met": row["met"], "ratio": row["met"] / row["intervals"]}
        for row in rows
    }
