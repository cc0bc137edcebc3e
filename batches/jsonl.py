"""A batch input file, read and checked line by line before anything runs (docs/batch.md, "Input files").

Each line is one JSON object ``{"custom_id", "method": "POST", "url", "body"}``, as OpenAI's Batch API takes it.
The first broken line refuses the whole file, naming its line number and what is wrong; nothing is stored. The
gateway checks each body again when it runs, as it checks any request; here only what would make the line
unrunnable or the file unmanageable is refused: no stream, no route of another kind, no custom id seen before.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from batches.models import CUSTOM_ID_MAX_LENGTH
from controlplane.contracts.batch_wire import BATCH_ENDPOINTS
from controlplane.contracts.jsonlimits import depth_exceeds, may_exceed_depth

_KEYS = {"custom_id", "method", "url", "body"}


class LineError(ValueError):
    """The file is refused at ``line`` (1-based) for ``reason``."""

    def __init__(self, line: int, reason: str) -> None:
        self.line = line
        self.reason = reason
        super().__init__(f"line {line}: {reason}")


@dataclass(frozen=True, slots=True)
class Line:
    number: int
    custom_id: str
    url: str
    body: bytes  # the body as the file had it, re-serialised compactly


@dataclass(frozen=True, slots=True)
class Limits:
    max_lines: int
    max_line_bytes: int


def read_lines(chunks: Iterable[bytes], limits: Limits) -> Iterator[Line]:
    """The file's lines, checked; raises ``LineError`` at the first bad one. Blank lines are skipped.

    ``chunks``: the file's bytes in pieces of any size (an upload's chunks, a stored file's); a line is never held
    beyond ``limits.max_line_bytes``, so a file without newlines cannot make this read it whole.
    """
    seen: set[str] = set()
    count = 0
    for number, raw in _split(chunks, limits.max_line_bytes):
        if not raw.strip():
            continue
        count += 1
        if count > limits.max_lines:
            raise LineError(number, f"the file has more than {limits.max_lines} requests")
        line = parse_line(number, raw)
        if line.custom_id in seen:
            raise LineError(number, f"custom_id {line.custom_id!r} appears more than once")
        seen.add(line.custom_id)
        yield line
    if count == 0:
        raise LineError(1, "the file holds no requests")


def _split(chunks: Iterable[bytes], max_line_bytes: int) -> Iterator[tuple[int, bytes]]:
    pending = b""
    number = 0
    for chunk in chunks:
        pending += chunk
        while (cut := pending.find(b"\n")) >= 0:
            number += 1
            line, pending = pending[:cut], pending[cut + 1 :]
            if len(line) > max_line_bytes:
                raise LineError(number, f"the line is longer than {max_line_bytes} bytes")
            yield number, line
        if len(pending) > max_line_bytes:
            raise LineError(number + 1, f"the line is longer than {max_line_bytes} bytes")
    if pending:
        yield number + 1, pending


def parse_line(number: int, raw: bytes) -> Line:
    """One line, or ``LineError`` saying what is wrong with it."""
    if may_exceed_depth(raw):
        try:
            value: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise LineError(number, "the line is not valid JSON") from None
        if depth_exceeds(value):
            raise LineError(number, "the line nests JSON too deeply")
    else:
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise LineError(number, "the line is not valid JSON") from None
    if not isinstance(value, dict):
        raise LineError(number, "each line must be a JSON object")
    if missing := sorted(_KEYS - value.keys()):
        raise LineError(number, f"missing field(s): {', '.join(missing)}")
    if extra := sorted(value.keys() - _KEYS):
        raise LineError(number, f"unknown field(s): {', '.join(extra)}")
    custom_id = value["custom_id"]
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > CUSTOM_ID_MAX_LENGTH:
        raise LineError(number, f"custom_id must be a non-empty string of at most {CUSTOM_ID_MAX_LENGTH} characters")
    if "\x00" in custom_id:
        raise LineError(number, "custom_id must not contain NUL")
    if value["method"] != "POST":
        raise LineError(number, "method must be 'POST'")
    url = value["url"]
    if url not in BATCH_ENDPOINTS:
        raise LineError(number, f"url must be one of {', '.join(BATCH_ENDPOINTS)}")
    body = value["body"]
    if not isinstance(body, dict):
        raise LineError(number, "body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise LineError(number, "body.model must name a model")
    if body.get("stream") not in (None, False):
        raise LineError(number, "body.stream is not supported in a batch")
    # Postgres text refuses NUL; the JSON escape \u0000 survives re-serialising, so it is refused here too.
    encoded = orjson.dumps(body)
    if b"\\u0000" in encoded:
        raise LineError(number, "the body must not contain NUL characters")
    return Line(number, custom_id, url, encoded)
