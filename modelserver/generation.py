"""Serving chat and text completions from the simulator, streamed or whole, paced like a real model."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from modelserver.asgi import (
    HttpError,
    Receive,
    Send,
    finish_event_stream,
    run_unless_disconnected,
    send_error,
    send_event,
    send_json,
    start_event_stream,
)
from modelserver.config import ModelServerConfig
from modelserver.faults import Faults
from modelserver.metrics import Metrics
from modelserver.payloads import CHAT, GenerationRequest
from modelserver.scheduler import SequenceScheduler
from modelserver.simulator import Generation, generate


class StreamTruncated(Exception):
    """The ``truncate_after`` fault cut the stream: the connection must close without ``[DONE]``."""


class _ChunkBudget:
    """Counts stream chunks against ``truncate_after`` (0 = unlimited)."""

    def __init__(self, limit: int) -> None:
        self.left = limit if limit > 0 else -1

    async def send(self, send: Send, payload: Any) -> None:
        if self.left == 0:
            raise StreamTruncated
        await send_event(send, payload)
        if self.left > 0:
            self.left -= 1


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class GenerationService:
    """Admits, paces and answers generation requests; owns nothing but references to shared state."""

    def __init__(
        self, config: ModelServerConfig, faults: Faults, scheduler: SequenceScheduler, metrics: Metrics
    ) -> None:
        self.config = config
        self.faults = faults
        self.scheduler = scheduler
        self.metrics = metrics

    def _answers(self, request: GenerationRequest) -> list[Generation]:
        return [
            generate(prompt, request.max_tokens, index=i, seed=request.seed)
            for prompt in request.prompts
            for i in range(request.n)
        ]

    def _pacing(self) -> tuple[float, float]:
        """Seconds before the first token (stall + TTFT) and between tokens."""
        first = (self.faults.settings.stall_ms + self.config.ttft_ms) / 1000.0
        tps = self.config.tokens_per_s
        return first, (1.0 / tps if tps > 0 else 0.0)

    async def serve(self, request: GenerationRequest, endpoint: str, receive: Receive, send: Send) -> None:
        arrived = time.monotonic()
        self.metrics.requested_models[request.model] += 1
        if self.faults.should_fail():
            self.metrics.injected_errors += 1
            self.metrics.count_request(endpoint, 500)
            await send_error(send, HttpError(500, "Simulated upstream failure (error_rate fault).", "simulated_error"))
            return
        self.metrics.prompt_tokens += request.prompt_tokens
        first_delay, _ = self._pacing()
        work = self._run(request, endpoint, arrived, send)
        # Watching for a disconnect costs a task; only pay it when the request can take a while.
        slow = request.stream or first_delay > 0 or self.scheduler.running >= self.scheduler.max_num_seqs
        if not slow:
            await work
            return
        if await run_unless_disconnected(receive, work):
            self.metrics.cancelled += 1
            self.metrics.count_request(endpoint, 499)

    async def _run(self, request: GenerationRequest, endpoint: str, arrived: float, send: Send) -> None:
        await self.scheduler.acquire()
        try:
            answers = self._answers(request)
            if request.stream:
                try:
                    await self._stream(request, answers, arrived, send)
                except StreamTruncated:
                    self.metrics.truncated += 1
            else:
                await self._whole(request, answers, arrived, send)
            self.metrics.count_request(endpoint, 200)
        finally:
            self.scheduler.release()

    async def _whole(self, request: GenerationRequest, answers: list[Generation], arrived: float, send: Send) -> None:
        first_delay, gap = self._pacing()
        longest = max(len(answer.words) for answer in answers)
        if first_delay:
            await asyncio.sleep(first_delay)
        self.metrics.observe_ttft(time.monotonic() - arrived)
        if gap and longest > 1:
            await asyncio.sleep(gap * (longest - 1))
        completion_tokens = sum(len(answer.words) for answer in answers)
        self.metrics.generation_tokens += completion_tokens
        base = {"id": _new_id(request), "created": int(time.time()), "model": request.model}
        if request.kind == CHAT:
            choices: list[dict[str, Any]] = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": answer.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": answer.finish_reason,
                }
                for i, answer in enumerate(answers)
            ]
            body = {**base, "object": "chat.completion", "choices": choices}
        else:
            choices = [
                {"index": i, "text": answer.text, "logprobs": None, "finish_reason": answer.finish_reason}
                for i, answer in enumerate(answers)
            ]
            body = {**base, "object": "text_completion", "choices": choices}
        body["system_fingerprint"] = None
        body["usage"] = _usage(request.prompt_tokens, completion_tokens)
        await send_json(send, 200, body)

    async def _stream(self, request: GenerationRequest, answers: list[Generation], arrived: float, send: Send) -> None:
        first_delay, gap = self._pacing()
        chat = request.kind == CHAT
        base: dict[str, Any] = {
            "id": _new_id(request),
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": request.model,
            "system_fingerprint": None,
            "choices": [],
        }
        if request.include_usage:
            base["usage"] = None  # OpenAI sends usage: null on every chunk but the last when asked for usage
        budget = _ChunkBudget(self.faults.settings.truncate_after)
        if first_delay:
            await asyncio.sleep(first_delay)
        await start_event_stream(send)

        def chunk(index: int, piece: str | None, finish_reason: str | None) -> dict[str, Any]:
            choice: dict[str, Any]
            if chat:
                delta = {} if piece is None else {"content": piece}
                choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            else:
                choice = {"index": index, "text": piece or "", "logprobs": None, "finish_reason": finish_reason}
            return {**base, "choices": [choice]}

        if chat:
            for i in range(len(answers)):
                first = chunk(i, "", None)
                first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
                await budget.send(send, first)
        pieces = [list(answer.pieces()) for answer in answers]
        completion_tokens = 0
        for step in range(max(len(p) for p in pieces)):
            if step == 0:
                self.metrics.observe_ttft(time.monotonic() - arrived)
            elif gap:
                await asyncio.sleep(gap)
            for i, choice_pieces in enumerate(pieces):
                if step < len(choice_pieces):
                    await budget.send(send, chunk(i, choice_pieces[step], None))
                    completion_tokens += 1
                    self.metrics.generation_tokens += 1
        for i, answer in enumerate(answers):
            await budget.send(send, chunk(i, None, answer.finish_reason))
        if request.include_usage:
            await budget.send(send, {**base, "choices": [], "usage": _usage(request.prompt_tokens, completion_tokens)})
        await finish_event_stream(send)


def _new_id(request: GenerationRequest) -> str:
    return ("chatcmpl-" if request.kind == CHAT else "cmpl-") + uuid.uuid4().hex
