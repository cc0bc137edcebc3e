"""Serving ``/v1/embeddings``: input validation, batching of list inputs, float or base64 encoding."""

from __future__ import annotations

import asyncio
from typing import Any

from modelserver.asgi import HttpError, Receive, Send, run_unless_disconnected, send_error, send_json
from modelserver.embedders import Embedder, MiniLMEmbedder, encode_base64, truncate_dimensions
from modelserver.faults import Faults
from modelserver.metrics import Metrics
from modelserver.payloads import is_token_array, require_model
from modelserver.scheduler import SequenceScheduler

MAX_INPUTS = 2048  # OpenAI's limit on inputs per request


def _invalid(message: str) -> HttpError:
    return HttpError(400, message, "invalid_value", "input")


class EmbeddingsService:
    """Turns ``input`` (a string, strings, a token array or token arrays) into one vector per item."""

    def __init__(self, embedder: Embedder, faults: Faults, scheduler: SequenceScheduler, metrics: Metrics) -> None:
        self.embedder = embedder
        self.faults = faults
        self.scheduler = scheduler
        self.metrics = metrics

    def _texts(self, raw: Any) -> tuple[list[str], int]:
        """The texts to embed and their prompt token count."""
        if isinstance(raw, str):
            items: list[Any] = [raw]
        elif is_token_array(raw):
            items = [raw]
        elif isinstance(raw, list) and raw:
            items = raw
        else:
            raise _invalid("'input' must be a non-empty string, array of strings, or token arrays.")
        if len(items) > MAX_INPUTS:
            raise _invalid(f"'input' may hold at most {MAX_INPUTS} items.")
        texts: list[str] = []
        tokens = 0
        for item in items:
            if isinstance(item, str):
                texts.append(item)
                tokens += self.embedder.count_tokens(item)
            elif is_token_array(item):
                texts.append(self._decode(item))
                tokens += len(item)
            else:
                raise _invalid("every item of 'input' must be a string or an array of token ids.")
        return texts, tokens

    def _decode(self, token_ids: list[int]) -> str:
        if isinstance(self.embedder, MiniLMEmbedder):
            return self.embedder.decode_tokens(token_ids)
        return " ".join(map(str, token_ids))  # the simulator has no vocabulary; ids are its words

    def parse(self, payload: dict[str, Any]) -> tuple[str, list[str], int, str, int | None]:
        model = require_model(payload)
        if payload.get("input") is None:
            raise HttpError(400, "Missing required parameter: 'input'.", "missing_required_parameter", "input")
        texts, tokens = self._texts(payload["input"])
        encoding = payload.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise HttpError(400, "'encoding_format' must be 'float' or 'base64'.", "invalid_value", "encoding_format")
        dimensions = payload.get("dimensions")
        if dimensions is not None and (
            isinstance(dimensions, bool)
            or not isinstance(dimensions, int)
            or not 1 <= dimensions <= self.embedder.dimensions
        ):
            raise HttpError(
                400,
                f"'dimensions' must be an integer between 1 and {self.embedder.dimensions}.",
                "invalid_value",
                "dimensions",
            )
        return model, texts, tokens, encoding, dimensions

    async def serve(self, payload: dict[str, Any], receive: Receive, send: Send) -> None:
        model, texts, tokens, encoding, dimensions = self.parse(payload)
        if self.faults.should_fail():
            self.metrics.injected_errors += 1
            self.metrics.count_request("embeddings", 500)
            await send_error(send, HttpError(500, "Simulated upstream failure (error_rate fault).", "simulated_error"))
            return
        self.metrics.prompt_tokens += tokens
        work = self._run(model, texts, tokens, encoding, dimensions, send)
        if self.faults.settings.stall_ms > 0 or self.scheduler.running >= self.scheduler.max_num_seqs:
            if await run_unless_disconnected(receive, work):
                self.metrics.cancelled += 1
                self.metrics.count_request("embeddings", 499)
        else:
            await work

    async def _run(
        self, model: str, texts: list[str], tokens: int, encoding: str, dimensions: int | None, send: Send
    ) -> None:
        await self.scheduler.acquire()
        try:
            if self.faults.settings.stall_ms > 0:
                await asyncio.sleep(self.faults.settings.stall_ms / 1000.0)
            vectors = await self.embedder.embed(texts)
        finally:
            self.scheduler.release()
        data = []
        for i, vector in enumerate(vectors):
            if dimensions is not None and dimensions != len(vector):
                vector = truncate_dimensions(vector, dimensions)
            embedding: list[float] | str = encode_base64(vector) if encoding == "base64" else vector
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        body = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        self.metrics.count_request("embeddings", 200)
        await send_json(send, 200, body)
