"""Embeddings micro-batching: concurrent compatible requests share one upstream call.

An encoder on a GPU embeds 64 sequences in about the time it embeds one (measured on an H200: 4.8 ms at batch 1, 4.9
ms at batch 64), so the gateway holds each embeddings request for a short window (2 ms by default) and merges the
requests that arrive meanwhile for the same upstream, model, encoding_format and dimensions (the caller's
``batch_key``) into one body whose ``input`` is the concatenation of theirs. The response is split back in order:
each request gets its own ``data`` with indexes renumbered from 0 and its share of ``usage``.

Bounded: a batch holds at most ``max_batch`` inputs and is sent as soon as it is full; the number of open batches
and in-flight upstream calls is bounded by the requests the gateway admitted (its concurrency limits).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Send = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class BatchResponseError(ValueError):
    """The upstream answered a merged request with data that cannot be split back (wrong count or indexes)."""


@dataclass(slots=True)
class _Item:
    body: dict[str, Any]
    inputs: list[Any]
    weight: int  # relative size, for splitting usage: characters of text or count of token ids
    future: asyncio.Future[dict[str, Any]]


@dataclass(slots=True)
class _Batch:
    batch_key: str
    items: list[_Item] = field(default_factory=list)
    size: int = 0  # inputs in the batch
    timer: asyncio.TimerHandle | None = None


def split_inputs(value: Any) -> tuple[list[Any], str] | None:
    """The individual inputs of an ``input`` field and their kind ("text" or "tokens"), or None if it is not one
    of the shapes OpenAI accepts (those are sent on alone, for the upstream to judge)."""
    if isinstance(value, str):
        return [value], "text"
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, str) for v in value):
        return list(value), "text"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return [value], "tokens"  # one tokenized input
    if all(isinstance(v, list) and v and all(isinstance(t, int) and not isinstance(t, bool) for t in v) for v in value):
        return list(value), "tokens"
    return None


def split_proportionally(total: int, weights: list[int]) -> list[int]:
    """Integer shares of ``total`` proportional to ``weights`` that sum exactly to ``total`` (largest remainder)."""
    if not weights:
        return []
    weight_sum = sum(weights)
    if weight_sum <= 0:
        weights, weight_sum = [1] * len(weights), len(weights)
    shares = [total * w // weight_sum for w in weights]
    remainders = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % weight_sum), i))
    for i in remainders[: total - sum(shares)]:
        shares[i] += 1
    return shares


def _weight(inputs: list[Any]) -> int:
    return sum(len(v) for v in inputs)


class EmbeddingsBatcher:
    """Merges concurrent embeddings requests per ``batch_key``; ``send(batch_key, body)`` calls the upstream."""

    def __init__(
        self,
        send: Send,
        window_s: float = 0.002,
        max_batch: int = 64,
        retry_alone: tuple[type[Exception], ...] = (),
    ) -> None:
        """``retry_alone``: errors of a merged call that may belong to one request's input (an upstream 4xx):
        each request is then sent on its own, so it gets its own answer."""
        self.send = send
        self.window_s = window_s
        self.max_batch = max(1, max_batch)
        self.retry_alone = retry_alone
        self._open: dict[str, _Batch] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # keeps running flushes referenced until they finish

    async def submit(self, batch_key: str, body: dict[str, Any]) -> dict[str, Any]:
        """The upstream's answer to ``body``, possibly obtained as part of a merged request."""
        parsed = split_inputs(body.get("input"))
        if self.window_s <= 0 or parsed is None or len(parsed[0]) >= self.max_batch:
            return await self.send(batch_key, body)
        inputs, kind = parsed
        # Text and token ids cannot share one `input` list: they batch separately.
        open_key = f"{kind}\x00{batch_key}"
        batch = self._open.get(open_key)
        if batch is not None and batch.size + len(inputs) > self.max_batch:
            self._flush(open_key)
            batch = None
        if batch is None:
            batch = _Batch(batch_key)
            batch.timer = asyncio.get_running_loop().call_later(self.window_s, self._flush, open_key)
            self._open[open_key] = batch
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        batch.items.append(_Item(body, inputs, _weight(inputs), future))
        batch.size += len(inputs)
        if batch.size >= self.max_batch:
            self._flush(open_key)
        return await future

    async def aclose(self) -> None:
        """Send every open batch now and wait for all upstream calls to finish."""
        for open_key in list(self._open):
            self._flush(open_key)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _flush(self, open_key: str) -> None:
        batch = self._open.pop(open_key, None)
        if batch is None:
            return
        if batch.timer is not None:
            batch.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: _Batch) -> None:
        items = [item for item in batch.items if not item.future.done()]  # skip callers that went away
        if not items:
            return
        outcomes: list[dict[str, Any] | BaseException]
        try:
            if len(items) == 1:
                outcomes = [await self.send(batch.batch_key, items[0].body)]
            else:
                outcomes = await self._send_merged(batch.batch_key, items)
        except asyncio.CancelledError:  # the gateway is shutting down: nobody will get an answer
            for item in items:
                item.future.cancel()
            raise
        except Exception as exc:  # every waiter of the batch gets the same error
            outcomes = [exc] * len(items)
        for item, outcome in zip(items, outcomes, strict=True):
            if item.future.done():
                continue
            if isinstance(outcome, BaseException):
                item.future.set_exception(outcome)
            else:
                item.future.set_result(outcome)

    async def _send_merged(self, batch_key: str, items: list[_Item]) -> list[dict[str, Any] | BaseException]:
        merged = dict(items[0].body)
        merged["input"] = [v for item in items for v in item.inputs]
        try:
            return list(split_response(await self.send(batch_key, merged), items))
        except self.retry_alone:
            return list(
                await asyncio.gather(*(self.send(batch_key, item.body) for item in items), return_exceptions=True)
            )


def split_response(response: dict[str, Any], items: list[_Item]) -> list[dict[str, Any]]:
    """One response per item, in order, each with its embeddings re-indexed from 0 and its share of usage."""
    data = response.get("data")
    total_inputs = sum(len(item.inputs) for item in items)
    if not isinstance(data, list) or len(data) != total_inputs:
        raise BatchResponseError(
            f"upstream returned {len(data) if isinstance(data, list) else 'no'} embeddings for {total_inputs} inputs"
        )
    try:
        ordered = sorted(data, key=lambda d: int(d["index"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise BatchResponseError(f"upstream embeddings without a usable index: {exc}") from exc
    if any(int(d["index"]) != i for i, d in enumerate(ordered)):
        raise BatchResponseError("upstream embedding indexes are not 0..n-1")
    usage = response.get("usage")
    if not isinstance(usage, dict):
        usage = {}  # nothing to split: each part is metered as having no usage
    weights = [item.weight for item in items]
    usage_shares = {
        name: split_proportionally(int(value), weights)
        for name, value in usage.items()
        if isinstance(value, int) and not isinstance(value, bool)
    }
    results: list[dict[str, Any]] = []
    offset = 0
    for n, item in enumerate(items):
        count = len(item.inputs)
        part = dict(response)
        part["data"] = [{**d, "index": i} for i, d in enumerate(ordered[offset : offset + count])]
        if usage_shares:
            part["usage"] = {**usage, **{name: shares[n] for name, shares in usage_shares.items()}}
        results.append(part)
        offset += count
    return results
