"""Label selectors (``a=b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``) and field selectors
(``metadata.name=x``, ``status.phase!=Running``) as list calls take them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

LabelTest = Callable[[dict[str, str]], bool]
ObjectTest = Callable[[dict[str, Any]], bool]


def _has(key: str, values: set[str], inside: bool) -> LabelTest:
    return lambda labels: (labels.get(key) in values) is inside


def _present(key: str, present: bool) -> LabelTest:
    return lambda labels: (key in labels) is present


def parse_selector(selector: str) -> list[LabelTest]:
    """``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a`` joined by commas."""
    tests: list[LabelTest] = []
    for part in re.findall(r"[^,(]+(?:\([^)]*\))?", selector):
        term = part.strip()
        if not term:
            continue
        match = re.match(r"^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$", term)
        if match:
            values = {v.strip() for v in match.group(3).split(",")}
            tests.append(_has(match.group(1), values, match.group(2) == "in"))
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            tests.append(_has(key, {value}, False))
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            tests.append(_has(key, {value}, True))
        elif term.startswith("!"):
            tests.append(_present(term[1:].strip(), False))
        else:
            tests.append(_present(term, True))
    return tests


def _field(obj: dict[str, Any], dotted: str) -> str:
    value: Any = obj
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def _field_is(key: str, value: str, equal: bool) -> ObjectTest:
    return lambda obj: (_field(obj, key) == value) is equal


def parse_field_selector(selector: str) -> list[ObjectTest]:
    """``metadata.name=x``, ``spec.nodeName=n``, ``status.phase!=Running``, ``involvedObject.name=x`` ..."""
    tests: list[ObjectTest] = []
    for term in filter(None, (t.strip() for t in selector.split(","))):
        negated = "!=" in term
        key, value = (part.strip() for part in term.replace("!=", "=").replace("==", "=").split("=", 1))
        tests.append(_field_is(key, value, not negated))
    return tests
