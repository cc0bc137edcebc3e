"""Numbers and times for people: ``{% load humanize_fd %}``.

- ``compact``: 1.3k, 32.9k, 1.2M (one decimal, rounded half up, never "1000k"); below 1,000 the number itself.
- ``thousands``: 12,345 (and 1,234.5: at most two decimals, trailing zeros dropped).
- ``utc``: the one date format of the console, ``2026-12-02 01:23 UTC``; a date alone is ``2026-12-02``.
- ``reltime``: ``<time datetime="2026-12-02T01:23:45Z" title="2026-12-02 01:23 UTC">3 min ago</time>``, relative to
  now (``in 40 s`` for a time ahead), the absolute UTC time on hover; older than 30 days it reads as the date.

Missing values (None, and NaN or infinity) render as an em dash; a value that is not a number or a time is rendered
unchanged, as Django's own filters do, so a template never fails on one.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()

MISSING = "—"
_UNITS = ("", "k", "M", "B", "T")
_TENTH = Decimal("0.1")
_HUNDREDTH = Decimal("0.01")
_THOUSAND = Decimal(1000)


def _missing(value: Any) -> bool:
    """None, or a number without a value (NaN, infinity): shown as "—"."""
    if isinstance(value, Decimal):
        return not value.is_finite()
    if isinstance(value, float):
        return not math.isfinite(value)
    return value is None


def _number(value: Any) -> Decimal | None:
    """``value`` as a finite Decimal, or None when it is no number (booleans are not numbers here)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int | float):
        number = Decimal(str(value))
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
    else:
        return None
    return number if number.is_finite() else None


def _plain(number: Decimal) -> str:
    """A Decimal without exponent or trailing zeros: 1.50 → "1.5", 2.0 → "2"."""
    text = f"{number:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _signed(negative: bool, text: str) -> str:
    return f"-{text}" if negative and text != "0" else text


@register.filter
def compact(value: Any) -> str:
    """1,300 → "1.3k", 32,900 → "32.9k", 1,049,999 → "1M", 999 → "999"; None → "—"."""
    if _missing(value):
        return MISSING
    number = _number(value)
    if number is None:
        return str(value)
    magnitude, unit = abs(number), 0
    rounded = magnitude.quantize(_TENTH, rounding=ROUND_HALF_UP)
    # Step up a unit while the rounded figure would read 1000 or more (999,950 is "1M", not "1000k").
    while rounded >= _THOUSAND and unit < len(_UNITS) - 1:
        magnitude /= _THOUSAND
        unit += 1
        rounded = magnitude.quantize(_TENTH, rounding=ROUND_HALF_UP)
    return _signed(number < 0, _plain(rounded) + _UNITS[unit])


@register.filter
def thousands(value: Any) -> str:
    """12345 → "12,345", 1234.5 → "1,234.5", -1000 → "-1,000"; None → "—"."""
    if _missing(value):
        return MISSING
    number = _number(value)
    if number is None:
        return str(value)
    magnitude = abs(number).quantize(_HUNDREDTH, rounding=ROUND_HALF_UP)
    whole, _, fraction = f"{magnitude:,f}".partition(".")
    fraction = fraction.rstrip("0")
    return _signed(number < 0, f"{whole}.{fraction}" if fraction else whole)


def _as_utc(value: dt.datetime) -> dt.datetime:
    # Naive datetimes are taken as UTC: the project stores every time in UTC (USE_TZ, TIME_ZONE = "UTC").
    if timezone.is_naive(value):
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


@register.filter
def utc(value: Any) -> str:
    """A datetime as "2026-12-02 01:23 UTC", a date as "2026-12-02"; None → "—"."""
    if value is None:
        return MISSING
    if isinstance(value, dt.datetime):
        return _as_utc(value).strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def relative(value: dt.datetime, now: dt.datetime) -> str:
    """How long ago (or ahead) ``value`` is from ``now``: "just now", "40 s ago", "3 min ago", "in 2 h", "5 days ago";
    30 days or more away, the date itself."""
    seconds = round((now - value).total_seconds())
    ahead, seconds = seconds < 0, abs(seconds)
    if seconds < 5:
        return "just now"
    if seconds < 60:
        amount = f"{seconds} s"
    elif seconds < 3600:
        amount = f"{seconds // 60} min"
    elif seconds < 86400:
        amount = f"{seconds // 3600} h"
    elif seconds < 30 * 86400:
        days = seconds // 86400
        amount = f"{days} day" if days == 1 else f"{days} days"
    else:
        return _as_utc(value).date().isoformat()
    return f"in {amount}" if ahead else f"{amount} ago"


@register.filter
def reltime(value: Any) -> SafeString | str:
    """A ``<time>`` element: relative text, the ISO 8601 UTC instant in ``datetime``, the UTC time as its title."""
    if value is None:
        return MISSING
    if not isinstance(value, dt.datetime):
        return str(value)
    instant = _as_utc(value)
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        instant.isoformat(timespec="seconds").replace("+00:00", "Z"),
        utc(instant),
        relative(instant, timezone.now()),
    )
