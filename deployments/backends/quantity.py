"""Kubernetes resource quantities (``resource.Quantity``): parsed exactly, and written the way the API server
stores them.

The API server keeps a quantity in canonical form, not as it was sent: ``1024Gi`` is stored as ``1Ti``, ``1000m``
as ``1``, ``0.5`` as ``500m``, ``2048Mi`` as ``2Gi`` and ``1000`` as ``1k``. So a manifest's ``requests``, ``limits``,
``sizeLimit``, ResourceQuota ``hard`` or HPA target reads back differently from what was applied, and comparing
those fields as strings would see a difference that is not there. ``same_quantity`` compares them by value.

The rules are those of ``k8s.io/apimachinery/pkg/api/resource``: the suffix's family is kept (binary ``Ki``..``Ei``,
decimal ``n``..``E``, or an exponent ``e3``); the value is rounded up to whole nano-units; a decimal value takes the
largest exponent (a multiple of 3) that leaves an integer; a binary value takes the largest power of 1024 that
leaves an integer, and falls back to decimal below 1024 or when it is not a whole number.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

# What the API server's decoder accepts before it looks closer (the message names this pattern).
QUANTITY_PATTERN = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
QUANTITY_ERROR = f"quantities must match the regular expression '{QUANTITY_PATTERN}'"

_NUMBER = re.compile(r"^([+-]?)([0-9]*)(?:\.([0-9]*))?")
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_SUFFIX = {exponent: suffix for suffix, exponent in _DECIMAL.items()}
_BINARY_SUFFIX = {power: suffix for suffix, power in _BINARY.items()}
_NANO = Fraction(1, 10**9)

BINARY, DECIMAL, EXPONENT = "BinarySI", "DecimalSI", "DecimalExponent"


class QuantityError(ValueError):
    """Not a quantity the API server would accept."""


def _parse(value: str | int | float) -> tuple[Fraction, str]:
    if isinstance(value, bool):
        raise QuantityError(QUANTITY_ERROR)
    if isinstance(value, int):
        return Fraction(value), DECIMAL
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError(QUANTITY_ERROR)
        return Fraction(str(value)), DECIMAL
    text = str(value).strip()
    number = _NUMBER.match(text)
    if not text or number is None or not (number.group(2) or number.group(3)):
        raise QuantityError(QUANTITY_ERROR)
    sign, whole, fraction = number.group(1), number.group(2) or "0", number.group(3) or ""
    amount = Fraction(int(whole + fraction), 10 ** len(fraction))
    if sign == "-":
        amount = -amount
    suffix = text[number.end() :]
    if suffix in _BINARY:
        return amount * 1024 ** _BINARY[suffix], BINARY
    if suffix in _DECIMAL:
        return amount * Fraction(10) ** _DECIMAL[suffix], DECIMAL
    exponent = re.fullmatch(r"[eE]([+-]?[0-9]+)", suffix)
    if exponent is None:
        raise QuantityError(QUANTITY_ERROR)
    return amount * Fraction(10) ** int(exponent.group(1)), EXPONENT


def _round_up_to_nano(amount: Fraction) -> Fraction:
    """Quantities hold at most nano precision; the API server rounds away from zero to it."""
    nanos = amount / _NANO
    if nanos.denominator == 1:
        return amount
    rounded = math.ceil(abs(nanos))
    return Fraction(rounded if amount > 0 else -rounded) * _NANO


def parse_quantity(value: str | int | float) -> Fraction:
    """The exact value of a quantity (``"1.5Gi"`` -> 1610612736); raises ``QuantityError`` when it is none."""
    amount, _ = _parse(value)
    return _round_up_to_nano(amount)


def format_quantity(amount: Fraction, fmt: str = DECIMAL) -> str:
    """``amount`` in canonical form for the suffix family ``fmt`` (``BINARY``, ``DECIMAL`` or ``EXPONENT``)."""
    amount = _round_up_to_nano(amount)
    if amount == 0:
        return "0"
    if fmt == BINARY and (abs(amount) < 1024 or amount.denominator != 1):
        fmt = DECIMAL  # below 1Ki or with a fraction, binary would lose precision: the server writes decimal
    if fmt == BINARY:
        power = 0
        while power < 6 and amount % 1024 ** (power + 1) == 0:
            power += 1
        return f"{amount // 1024**power}{_BINARY_SUFFIX.get(power, '')}"
    exponent = 18
    while exponent > -9 and (amount / Fraction(10) ** exponent).denominator != 1:
        exponent -= 3
    mantissa = amount / Fraction(10) ** exponent
    if fmt == EXPONENT:
        return f"{mantissa.numerator}{f'e{exponent}' if exponent else ''}"
    return f"{mantissa.numerator}{_DECIMAL_SUFFIX[exponent]}"


def quantity_format(value: str | int | float) -> str:
    """The suffix family of ``value``: the canonical form of a sum keeps that of its first non-zero term."""
    return _parse(value)[1]


def canonical(value: str | int | float) -> str:
    """The form the API server stores ``value`` in (``"1024Gi"`` -> ``"1Ti"``, ``"0.5"`` -> ``"500m"``)."""
    amount, fmt = _parse(value)
    return format_quantity(amount, fmt)


def same_quantity(a: object, b: object) -> bool:
    """True when ``a`` and ``b`` are quantities of the same value (``"1024Gi"`` and ``"1Ti"``)."""
    if not isinstance(a, str | int | float) or not isinstance(b, str | int | float):
        return False
    try:
        return parse_quantity(a) == parse_quantity(b)
    except QuantityError:
        return False
