"""A batch input file is refused at its first broken line, with the line's number and what is wrong."""

from __future__ import annotations

import json

import pytest

from batches.jsonl import Limits, LineError, read_lines

LIMITS = Limits(max_lines=5, max_line_bytes=1000)


def _line(custom_id: str = "a", **overrides: object) -> bytes:
    line = {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    }
    line.update(overrides)
    return json.dumps(line).encode()


def _refusal(content: bytes, chunk: int = 7) -> LineError:
    pieces = [content[i : i + chunk] for i in range(0, len(content), chunk)]
    with pytest.raises(LineError) as refused:
        list(read_lines(pieces, LIMITS))
    return refused.value


def test_good_lines_are_read_across_any_chunking() -> None:
    content = b"\n".join([_line("a"), b"", _line("b"), _line("c")])  # a blank line is skipped, no final newline
    for chunk in (1, 5, 1000):
        pieces = [content[i : i + chunk] for i in range(0, len(content), chunk)]
        lines = list(read_lines(pieces, LIMITS))
        assert [(line.number, line.custom_id) for line in lines] == [(1, "a"), (3, "b"), (4, "c")]
        assert json.loads(lines[0].body)["model"] == "m"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (json.dumps({"custom_id": "x", "method": "POST", "url": "/v1/completions"}).encode(), "missing field(s): body"),
        (_line("x", extra=1), "unknown field(s): extra"),
        (_line(""), "custom_id must be a non-empty string"),
        (_line("x" * 513), "custom_id must be a non-empty string"),
        (_line("x", method="GET"), "method must be 'POST'"),
        (_line("x", url="/v1/images/generations"), "url must be one of"),
        (_line("x", url="http://169.254.169.254/"), "url must be one of"),
        (_line("x", body=[]), "body must be a JSON object"),
        (_line("x", body={"messages": []}), "body.model must name a model"),
        (_line("x", body={"model": "m", "stream": True}), "body.stream is not supported"),
        (_line("x", body={"model": "m", "prompt": "a\u0000b"}), "must not contain NUL"),
        (_line("x\u0000"), "custom_id must not contain NUL"),
        (b"[" * 100 + b"]" * 100, "nests JSON too deeply"),
    ],
)
def test_a_broken_line_is_named(bad: bytes, reason: str) -> None:
    refused = _refusal(_line("a") + b"\n" + _line("b") + b"\n" + bad + b"\n" + _line("d"))
    assert refused.line == 3
    assert reason in refused.reason, refused.reason
    assert str(refused).startswith("line 3: ")


def test_duplicate_custom_ids_too_many_lines_long_lines_and_empty_files() -> None:
    assert _refusal(_line("a") + b"\n" + _line("a")).reason.startswith("custom_id 'a' appears more than once")
    many = b"\n".join(_line(str(n)) for n in range(6))
    assert (_refusal(many).line, "more than 5 requests" in _refusal(many).reason) == (6, True)
    long = _line("a", body={"model": "m", "prompt": "x" * 1500})
    assert _refusal(_line("z") + b"\n" + long).line == 2
    assert _refusal(_line("z") + b"\n" + b"x" * 5000).line == 2  # no newline in sight: never read whole
    assert _refusal(b"\n\n").reason == "the file holds no requests"
