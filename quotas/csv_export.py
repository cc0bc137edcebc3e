"""CSV downloads of usage, streamed row by row (a year of days × tenants never sits in memory as one string)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from django.http import StreamingHttpResponse

from quotas.reports import (
    BATCH_METRICS,
    METRICS,
    UNIT_METRICS,
    DateRange,
    usage_by_day_and_tenant,
    usage_detail_rows,
)

# A cell starting with one of these is a formula to spreadsheet programs; tenant, key and deployment names are
# user input, so such names are prefixed with an apostrophe (OWASP "CSV injection").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# A staff row is one day of one tenant, all its traffic, with the batch share of it in the batch_* columns; a tenant
# row is one day × deployment × key × traffic (interactive or batch), so its figures need no batch columns.
# Inferences and images come last, after the columns that readers written before them expect.
STAFF_HEADER = ("date", "tenant", "tenant_name", *METRICS, *BATCH_METRICS, *UNIT_METRICS)
TENANT_HEADER = ("date", "deployment", "api_key_id", "api_key_name", "traffic", *METRICS, *UNIT_METRICS)


def safe_cell(value: Any) -> Any:
    """The value, with text that a spreadsheet would run as a formula defused."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


class _Echo:
    """A file-like object whose ``write`` returns the line, so ``csv.writer`` can feed a streaming response."""

    def write(self, value: str) -> str:
        return value


def stream_csv(filename: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> StreamingHttpResponse:
    """A download of ``header`` then ``rows`` as CSV (UTF-8, comma, CRLF as RFC 4180 says)."""
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        yield writer.writerow(header)
        for row in rows:
            yield writer.writerow([safe_cell(cell) for cell in row])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def staff_usage_csv(period: DateRange) -> StreamingHttpResponse:
    """Usage per day × tenant over the range, for platform staff."""
    rows = (
        (
            row["day"].isoformat(),
            row["tenant__slug"],
            row["tenant__name"],
            *(row[m] for m in (*METRICS, *BATCH_METRICS, *UNIT_METRICS)),
        )
        for row in usage_by_day_and_tenant(period)
    )
    return stream_csv(f"frontdoor-usage-{period.first}-{period.last}.csv", STAFF_HEADER, rows)


def tenant_usage_csv(period: DateRange, tenant_id: int, slug: str) -> StreamingHttpResponse:
    """One tenant's usage per day × deployment × key × traffic over the range."""
    rows = (
        (
            row["day"].isoformat(),
            row["deployment_name"] or (f"#{row['deployment_id']}" if row["deployment_id"] else ""),
            row["api_key__key_id"] or "",
            row["api_key__name"] or "",
            row["traffic"],
            *(row[m] for m in (*METRICS, *UNIT_METRICS)),
        )
        for row in usage_detail_rows(period, tenant_id)
    )
    return stream_csv(f"{slug}-usage-{period.first}-{period.last}.csv", TENANT_HEADER, rows)
