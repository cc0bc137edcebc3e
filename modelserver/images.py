"""Serving ``/v1/images/generations`` in OpenAI's shape: real, deterministic PNGs of the asked size, as base64."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from dataclasses import dataclass
from typing import Any

from modelserver.asgi import HttpError, Receive, Send, run_unless_disconnected, send_error, send_json
from modelserver.faults import Faults
from modelserver.metrics import Metrics
from modelserver.pictures import render_png
from modelserver.scheduler import SequenceScheduler

ENDPOINT = "images"  # the ``endpoint`` label in modelserver_requests_total
MAX_PROMPT_CHARS = 4000
MAX_IMAGES = 10
MIN_SIDE, MAX_SIDE = 16, 2048
DEFAULT_SIZE = (1024, 1024)
# Pixels one request may ask for (n x width x height): four 2048x2048 pictures, or ten of 1024x1024.
MAX_PIXELS = 4 * MAX_SIDE * MAX_SIDE
_SIZE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")  # ASCII digits: \d would take any script's


def _invalid(param: str, message: str) -> HttpError:
    return HttpError(400, message, "invalid_value", param)


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    n: int
    width: int
    height: int


def _size(value: Any) -> tuple[int, int]:
    if value is None or value == "auto":
        return DEFAULT_SIZE
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None or not all(MIN_SIDE <= int(side) <= MAX_SIDE for side in match.groups()):
        raise _invalid(
            "size", f"'size' must be 'auto' or 'WIDTHxHEIGHT' with each side from {MIN_SIDE} to {MAX_SIDE} pixels."
        )
    return int(match.group(1)), int(match.group(2))


def parse_image_request(payload: dict[str, Any]) -> ImageRequest:
    """Checks every field this server acts on; other OpenAI fields (quality, style, user) are accepted and unused."""
    model = payload.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise _invalid("model", "'model' must be a non-empty string.")
    prompt = payload.get("prompt")
    if prompt is None:
        raise HttpError(400, "Missing required parameter: 'prompt'.", "missing_required_parameter", "prompt")
    if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > MAX_PROMPT_CHARS:
        raise _invalid("prompt", f"'prompt' must be a non-empty string of at most {MAX_PROMPT_CHARS} characters.")
    n = payload.get("n")
    if n is None:
        n = 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_IMAGES:
        raise _invalid("n", f"'n' must be an integer from 1 to {MAX_IMAGES}.")
    width, height = _size(payload.get("size"))
    if n * width * height > MAX_PIXELS:
        raise _invalid("n", f"'n' images of {width}x{height} exceed the {MAX_PIXELS} pixels one request may ask for.")
    response_format = payload.get("response_format")
    if response_format == "url":
        raise _invalid(
            "response_format", "This server keeps no files, so it cannot answer with a 'url'; ask for 'b64_json'."
        )
    if response_format not in (None, "b64_json"):
        raise _invalid("response_format", "'response_format' must be 'b64_json'.")
    return ImageRequest(prompt, n, width, height)


def _render_all(request: ImageRequest) -> list[str]:
    return [
        base64.b64encode(render_png(request.prompt, i, request.width, request.height)).decode("ascii")
        for i in range(request.n)
    ]


class ImagesService:
    """Admits, renders (off the event loop) and answers image requests."""

    def __init__(self, faults: Faults, scheduler: SequenceScheduler, metrics: Metrics) -> None:
        self.faults = faults
        self.scheduler = scheduler
        self.metrics = metrics

    async def serve(self, payload: dict[str, Any], receive: Receive, send: Send) -> None:
        request = parse_image_request(payload)
        if self.faults.should_fail():
            self.metrics.injected_errors += 1
            self.metrics.count_request(ENDPOINT, 500)
            await send_error(send, HttpError(500, "Simulated upstream failure (error_rate fault).", "simulated_error"))
            return
        # Rendering takes a while at large sizes: watch for a client that leaves meanwhile.
        if await run_unless_disconnected(receive, self._run(request, send)):
            self.metrics.cancelled += 1
            self.metrics.count_request(ENDPOINT, 499)

    async def _run(self, request: ImageRequest, send: Send) -> None:
        await self.scheduler.acquire()
        try:
            if self.faults.settings.stall_ms > 0:
                await asyncio.sleep(self.faults.settings.stall_ms / 1000.0)
            # numpy and zlib release the GIL, so rendering in a thread keeps the loop serving other requests.
            pictures = await asyncio.to_thread(_render_all, request)
        finally:
            self.scheduler.release()
        data = [{"b64_json": picture, "revised_prompt": request.prompt} for picture in pictures]
        self.metrics.count_request(ENDPOINT, 200)
        await send_json(send, 200, {"created": int(time.time()), "data": data})
