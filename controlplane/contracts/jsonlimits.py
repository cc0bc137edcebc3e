"""How deeply a JSON body may nest, for the gateway and the REST API alike.

Deep nesting costs a parser stack per level: Python's json raises RecursionError (a 500) near 1,000 levels,
orjson refuses to encode past 254, and recursive code that walks a payload overflows long before either.
No legitimate OpenAI or control-plane body nests anywhere near ``MAX_JSON_DEPTH``.
"""

from __future__ import annotations

from typing import Any

MAX_JSON_DEPTH = 64


def may_exceed_depth(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """False when ``raw`` cannot nest deeper than ``limit`` (fewer brackets than that in all): a C-speed pre-check."""
    return raw.count(b"[") + raw.count(b"{") > limit


def depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when the parsed JSON ``value`` nests arrays/objects more than ``limit`` levels deep (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
