"""The embeddings micro-batcher: concurrent submits share one upstream call and get their own part back.

The upstream is the injected ``send`` transport; here a recording async function that answers like an
OpenAI-compatible embeddings endpoint (one vector per input, in order, with usage).
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.batching import BatchResponseError, EmbeddingsBatcher, split_inputs, split_proportionally


class Upstream:
    """Records every body it is sent; embeds input i as [len(input), i] and counts one token per character/id."""

    def __init__(self, *, fail: Exception | None = None, shuffle: bool = False, drop_one: bool = False) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail = fail
        self.shuffle = shuffle
        self.drop_one = drop_one

    async def send(self, batch_key: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((batch_key, copy.deepcopy(body)))
        await asyncio.sleep(0)  # a real upstream answers later
        if self.fail is not None:
            raise self.fail
        inputs = split_inputs(body["input"])
        assert inputs is not None
        values = inputs[0]
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(v)), float(i)]} for i, v in enumerate(values)
        ]
        if self.shuffle:
            data.reverse()
        if self.drop_one:
            data.pop()
        tokens = sum(len(v) for v in values) + 1  # +1 so the split is not trivially exact
        return {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


def body(value: Any) -> dict[str, Any]:
    return {"model": "minilm", "input": value, "encoding_format": "float"}


async def submit_together(batcher: EmbeddingsBatcher, *bodies: dict[str, Any], key: str = "dep-1") -> list[Any]:
    return await asyncio.gather(*(batcher.submit(key, b) for b in bodies), return_exceptions=True)


def test_it_merges_concurrent_submits_into_one_upstream_call() -> None:
    upstream = Upstream()

    async def scenario() -> list[Any]:
        batcher = EmbeddingsBatcher(upstream.send, window_s=0.05)
        return await submit_together(batcher, body("hello"), body(["a", "bb", "ccc"]), body(["dddd"]))

    single, triple, last = asyncio.run(scenario())
    assert len(upstream.calls) == 1
    assert upstream.calls[0][1]["input"] == ["hello", "a", "bb", "ccc", "dddd"]
    assert upstream.calls[0][1]["encoding_format"] == "float"
    assert [d["index"] for d in single["data"]] == [0]
    assert [d["index"] for d in triple["data"]] == [0, 1, 2]
    assert [d["index"] for d in last["data"]] == [0]
    # each request gets the vectors of its own inputs: [len(input), position in the merged call]
    assert [d["embedding"] for d in single["data"]] == [[5.0, 0.0]]
    assert [d["embedding"] for d in triple["data"]] == [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]
    assert [d["embedding"] for d in last["data"]] == [[4.0, 4.0]]
    assert all(r["model"] == "minilm" and r["object"] == "list" for r in (single, triple, last))


def test_it_splits_usage_so_the_parts_sum_to_the_total() -> None:
    upstream = Upstream()

    async def scenario() -> list[Any]:
        batcher = EmbeddingsBatcher(upstream.send, window_s=0.05)
        return await submit_together(batcher, body("aaaa"), body(["b", "c"]), body("dddddddddd"))

    results = asyncio.run(scenario())
    total = 4 + 2 + 10 + 1
    assert sum(r["usage"]["prompt_tokens"] for r in results) == total
    assert sum(r["usage"]["total_tokens"] for r in results) == total
    # proportional to size: the longest input carries the largest share
    assert (
        results[2]["usage"]["prompt_tokens"]
        > results[0]["usage"]["prompt_tokens"]
        > results[1]["usage"]["prompt_tokens"]
    )


def test_it_fails_every_waiter_of_the_batch_with_the_upstream_error() -> None:
    error = ConnectionError("upstream reset")
    upstream = Upstream(fail=error)

    async def scenario() -> list[Any]:
        batcher = EmbeddingsBatcher(upstream.send, window_s=0.05)
        return await submit_together(batcher, body("a"), body("b"), body(["c", "d"]))

    results = asyncio.run(scenario())
    assert len(upstream.calls) == 1
    assert results == [error, error, error]


def test_it_fails_every_waiter_when_the_response_cannot_be_split() -> None:
    upstream = Upstream(drop_one=True)

    async def scenario() -> list[Any]:
        batcher = EmbeddingsBatcher(upstream.send, window_s=0.05)
        return await submit_together(batcher, body("a"), body("b"))

    results = asyncio.run(scenario())
    assert all(isinstance(r, BatchResponseError) for r in results)


def test_it_puts_embeddings_back_in_index_order() -> None:
    upstream = Upstream(shuffle=True)

    async def scenario() -> list[Any]:
        batcher = EmbeddingsBatcher(upstream.send, window_s=0.05)
        return await submit_together(batcher, body(["a", "bb"]), body(["ccc"]))

    first, second = asyncio.run(scenario())
    assert [d["embedding"] for d in first["data"]] == [[1.0, 0.0], [2.0, 1.0]]
    assert [d["embedding"] for d in second["data"]] == [[3.0, 2.0]]


def test_it_passes_every_request_through_when_the_window_is_zero() -> None:
    upstream = Upstream()
    bodies = [body("a"), body(["b", "c"])]

    async def scenario() -> list[Any]:
        return await submit_together(EmbeddingsBatcher(upstream.send, window_s=0), *bodies)

    results = asyncio.run(scenario())
    assert [b for _, b in upstream.calls] == bodies
    assert [len(r["data"]) for r in results] == [1, 2]


def test_it_sends_a_lone_request_as_is() -> None:
    upstream = Upstream()
    lone = {**body(["x", "y"]), "dimensions": 64, "user": "u-1"}

    async def scenario() -> dict[str, Any]:
        return await EmbeddingsBatcher(upstream.send, window_s=0.01).submit("dep-1", lone)

    result = asyncio.run(scenario())
    assert upstream.calls == [("dep-1", lone)]
    assert result["usage"]["prompt_tokens"] == 3


def test_it_sends_a_full_batch_without_waiting_for_the_window() -> None:
    upstream = Upstream()

    async def scenario() -> list[Any]:
        batcher = EmbeddingsBatcher(upstream.send, window_s=3600, max_batch=4)
        # an hour-long window: only reaching max_batch can send this batch before the timeout
        return await asyncio.wait_for(submit_together(batcher, body(["a", "b"]), body("c"), body("d")), timeout=10)

    results = asyncio.run(scenario())
    assert len(upstream.calls) == 1
    assert [len(r["data"]) for r in results] == [2, 1, 1]


def test_it_starts_a_new_batch_rather_than_exceed_max_batch() -> None:
    upstream = Upstream()

    async def scenario() -> list[Any]:
        batcher = EmbeddingsBatcher(upstream.send, window_s=0.05, max_batch=4)
        return await submit_together(batcher, body(["a", "b", "c"]), body(["d", "e"]), body(["f", "g", "h", "i", "j"]))

    results = asyncio.run(scenario())
    inputs = sorted(b["input"] for _, b in upstream.calls)
    assert inputs == [["a", "b", "c"], ["d", "e"], ["f", "g", "h", "i", "j"]]
    assert [len(r["data"]) for r in results] == [3, 2, 5]


def test_it_batches_token_ids_apart_from_text_and_per_batch_key() -> None:
    upstream = Upstream()

    async def scenario() -> list[Any]:
        batcher = EmbeddingsBatcher(upstream.send, window_s=0.05)
        same_key = submit_together(batcher, body("text"), body([[1, 2], [3]]), body([4, 5, 6]))
        other_key = submit_together(batcher, body("elsewhere"), key="dep-2")
        first, second = await asyncio.gather(same_key, other_key)
        return [*first, *second]

    results = asyncio.run(scenario())
    sent = sorted((key, repr(b["input"])) for key, b in upstream.calls)
    assert sent == [("dep-1", "'text'"), ("dep-1", "[[1, 2], [3], [4, 5, 6]]"), ("dep-2", "'elsewhere'")]
    assert [len(r["data"]) for r in results] == [1, 2, 1, 1]
    assert [d["embedding"][0] for d in results[2]["data"]] == [3.0]  # the single tokenized input [4, 5, 6]


def test_it_still_answers_the_others_when_one_caller_goes_away() -> None:
    upstream = Upstream()

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        batcher = EmbeddingsBatcher(upstream.send, window_s=0.05)
        leaving = asyncio.create_task(batcher.submit("dep-1", body("gone")))
        staying = [asyncio.create_task(batcher.submit("dep-1", body(v))) for v in ("a", "bb")]
        await asyncio.sleep(0)
        leaving.cancel()
        first, second = await asyncio.gather(*staying)
        return first, second

    first, second = asyncio.run(scenario())
    assert upstream.calls[0][1]["input"] == ["a", "bb"]  # the departed caller's input is not sent
    assert [d["embedding"][0] for d in first["data"] + second["data"]] == [1.0, 2.0]


@given(total=st.integers(0, 10**9), weights=st.lists(st.integers(0, 10**6), min_size=1, max_size=64))
def test_it_splits_any_total_exactly(total: int, weights: list[int]) -> None:
    shares = split_proportionally(total, weights)
    assert sum(shares) == total
    assert all(share >= 0 for share in shares)
    if sum(weights) > 0:
        assert all(abs(share - total * w / sum(weights)) < 1 for share, w in zip(shares, weights, strict=True))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("hi", (["hi"], "text")),
        (["a", "b"], (["a", "b"], "text")),
        ([1, 2, 3], ([[1, 2, 3]], "tokens")),
        ([[1], [2, 3]], ([[1], [2, 3]], "tokens")),
        ([], None),
        (["a", [1]], None),
        ([True, False], None),
        (None, None),
    ],
)
def test_it_recognises_the_openai_input_shapes(value: Any, expected: Any) -> None:
    assert split_inputs(value) == expected
