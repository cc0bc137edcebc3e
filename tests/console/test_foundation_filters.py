"""The number and time filters (``{% load humanize_fd %}``): exact output for the edges people meet."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.template import engines
from django.utils import timezone

from controlplane.templatetags.humanize_fd import compact, relative, reltime, thousands, utc

NOW = dt.datetime(2026, 12, 2, 1, 23, 45, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0, "0"),
        (999, "999"),
        (1000, "1k"),
        (1300, "1.3k"),
        (32_900, "32.9k"),
        (999_949, "999.9k"),
        (999_950, "1M"),  # rounds to 1000.0k: the next unit, never "1000k"
        (1_049_999, "1M"),
        (1_050_000, "1.1M"),  # half up
        (2_500_000_000, "2.5B"),
        (7 * 10**12, "7T"),
        (-1500, "-1.5k"),
        (-999, "-999"),
        (-0.04, "0"),  # no "-0"
        (12.34, "12.3"),
        (999.96, "1k"),
        (Decimal("1234.5"), "1.2k"),
        ("2500", "2.5k"),
        (None, "—"),
        (float("nan"), "—"),
        (float("inf"), "—"),
        ("n/a", "n/a"),
        (True, "True"),
    ],
)
def test_it_compacts_numbers(value: Any, shown: str) -> None:
    assert compact(value) == shown


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0, "0"),
        (999, "999"),
        (1000, "1,000"),
        (12_345, "12,345"),
        (1_049_999, "1,049,999"),
        (-1_049_999, "-1,049,999"),
        (1234.5, "1,234.5"),
        (1234.567, "1,234.57"),
        (Decimal("1000.00"), "1,000"),
        (-0.001, "0"),
        ("12345", "12,345"),
        (None, "—"),
        (float("nan"), "—"),
        ("n/a", "n/a"),
    ],
)
def test_it_separates_thousands(value: Any, shown: str) -> None:
    assert thousands(value) == shown


def test_it_writes_one_date_format_in_utc() -> None:
    paris = dt.timezone(dt.timedelta(hours=1))
    assert utc(NOW) == "2026-12-02 01:23 UTC"
    assert utc(dt.datetime(2026, 12, 2, 2, 23, tzinfo=paris)) == "2026-12-02 01:23 UTC"
    assert utc(dt.datetime(2026, 12, 2, 1, 23)) == "2026-12-02 01:23 UTC"  # naive: taken as UTC
    assert utc(dt.date(2026, 12, 2)) == "2026-12-02"
    assert utc(None) == "—"
    assert utc("soon") == "soon"


@pytest.mark.parametrize(
    ("offset_s", "shown"),
    [
        (0, "just now"),
        (4, "just now"),
        (-4, "just now"),
        (5, "5 s ago"),
        (59, "59 s ago"),
        (60, "1 min ago"),
        (3 * 60 + 59, "3 min ago"),
        (3599, "59 min ago"),
        (3600, "1 h ago"),
        (86399, "23 h ago"),
        (86400, "1 day ago"),
        (2 * 86400, "2 days ago"),
        (30 * 86400 - 1, "29 days ago"),
        (30 * 86400, "2026-11-02"),
        (-40, "in 40 s"),
        (-3 * 60, "in 3 min"),
        (-2 * 3600, "in 2 h"),
        (-86400, "in 1 day"),
        (-40 * 86400, "2027-01-11"),
    ],
)
def test_it_says_how_long_ago(offset_s: int, shown: str) -> None:
    assert relative(NOW - dt.timedelta(seconds=offset_s), NOW) == shown


def test_reltime_is_a_time_element_with_the_utc_time_on_hover(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timezone, "now", lambda: NOW)

    assert reltime(NOW - dt.timedelta(minutes=3)) == (
        '<time datetime="2026-12-02T01:20:45Z" title="2026-12-02 01:20 UTC">3 min ago</time>'
    )
    assert reltime(None) == "—"
    assert reltime("<b>x</b>") == "<b>x</b>"  # not a time: unchanged text, escaped by the template


def test_the_project_templates_load_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timezone, "now", lambda: NOW)
    source = (
        "{% load humanize_fd %}{{ n|compact }} · {{ n|thousands }} · {{ when|utc }} · {{ when|reltime }} · "
        "{{ text|compact }}"
    )

    shown = engines["django"].from_string(source).render({"n": 32_900, "when": NOW, "text": "<script>"})

    assert shown == (
        '32.9k · 32,900 · 2026-12-02 01:23 UTC · <time datetime="2026-12-02T01:23:45Z" '
        'title="2026-12-02 01:23 UTC">just now</time> · &lt;script&gt;'
    )
