"""``deployments.backends.quantity`` writes quantities as the API server stores them and compares them by value."""

from __future__ import annotations

from fractions import Fraction

import pytest

from deployments.backends.quantity import QuantityError, canonical, parse_quantity, same_quantity


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("1024Gi", "1Ti"),
        ("1000m", "1"),
        ("0.5", "500m"),
        ("2048Mi", "2Gi"),
        ("1000", "1k"),
        ("1500m", "1500m"),
        ("1.5Gi", "1536Mi"),  # not a whole Gi: the largest binary unit that leaves an integer
        ("0.5Ki", "512"),  # below 1Ki a binary quantity is written in decimal
        ("1Ki", "1Ki"),
        ("1025", "1025"),
        ("1e3", "1e3"),  # the exponent form stays an exponent
        ("1500000", "1500k"),
        ("0.0000000001", "1n"),  # rounded up to whole nano-units
        ("0", "0"),
        ("64", "64"),
        (8, "8"),
    ],
)
def test_it_writes_the_canonical_form(given: str | int, stored: str) -> None:
    assert canonical(given) == stored
    assert canonical(stored) == stored  # canonical forms are fixed points


def test_it_parses_exact_values() -> None:
    assert parse_quantity("1.5Gi") == 1536 * 2**20
    assert parse_quantity("250m") == Fraction(1, 4)
    assert parse_quantity("2e3") == 2000


@pytest.mark.parametrize("bad", ["", "two", "1x", "1.2.3", "Gi", "1 Gi", "--1"])
def test_it_refuses_what_the_api_server_refuses(bad: str) -> None:
    with pytest.raises(QuantityError):
        canonical(bad)


def test_it_compares_by_value() -> None:
    assert same_quantity("1024Gi", "1Ti")
    assert same_quantity("1000", "1k")
    assert same_quantity(4, "4000m")
    assert not same_quantity("1Gi", "1G")  # 2^30 is not 10^9
    assert not same_quantity("1Gi", "not a quantity")
    assert not same_quantity(None, "1")
