"""The JSON nesting bound: exact at the limit, no recursion however deep the value."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from controlplane.contracts.jsonlimits import MAX_JSON_DEPTH, depth_exceeds, may_exceed_depth


def nest(depth: int) -> object:
    value: object = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def test_the_bound_is_exact() -> None:
    assert not depth_exceeds(nest(MAX_JSON_DEPTH))
    assert depth_exceeds(nest(MAX_JSON_DEPTH + 1))
    assert not depth_exceeds("scalar") and not depth_exceeds([])


def test_it_walks_a_value_far_deeper_than_the_interpreter_stack() -> None:
    assert depth_exceeds(nest(200_000))


@given(st.recursive(st.none() | st.integers(), lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(), c)))
def test_the_byte_precheck_never_clears_a_body_that_is_too_deep(value: object) -> None:
    raw = json.dumps(value).encode()
    if depth_exceeds(value, 3):
        assert may_exceed_depth(raw, 3)
