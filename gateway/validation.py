"""Checking request bodies before anything goes upstream, and estimating their token cost.

The estimate is an upper bound: every tokenizer we route to (the simulator's word/punctuation tokenizer,
byte-level BPE) yields at most one token per character of text, so counting characters never under-reserves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway.config import GatewayConfig
from gateway.errors import GatewayError, invalid_request

CHAT = "chat"
COMPLETIONS = "completions"
EMBEDDINGS = "embeddings"


@dataclass(slots=True)
class ParsedRequest:
    kind: str
    payload: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool  # the client asked for the usage chunk
    prompt_estimate: int
    max_tokens: int  # what we reserve for the completion (0 for embeddings)


def _missing(param: str) -> GatewayError:
    return invalid_request(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def _invalid(param: str, message: str) -> GatewayError:
    return invalid_request(message, param, "invalid_value")


def _text_size(value: Any) -> int:
    """Characters of text (or token ids) in a prompt / input / message content, recursively."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_size(v) if not isinstance(v, int) else 1 for v in value)
    if isinstance(value, dict):
        return _text_size(value.get("text")) + _text_size(value.get("content"))
    return 0


def _bounded_int(payload: dict[str, Any], name: str, cap: int) -> int | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _invalid(name, f"'{name}' must be a positive integer.")
    if value > cap:
        raise _invalid(name, f"'{name}' is {value}, above this gateway's limit of {cap}.")
    return value


def parse_request(kind: str, body: bytes, config: GatewayConfig) -> ParsedRequest:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise invalid_request("We could not parse the JSON body of your request.", None, "invalid_json") from None
    if not isinstance(payload, dict):
        raise invalid_request("The request body must be a JSON object.", None, "invalid_json")
    model = payload.get("model")
    if model is None:
        raise _missing("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model", "'model' must be a non-empty string.")

    if kind == EMBEDDINGS:
        inputs = payload.get("input")
        if inputs is None:
            raise _missing("input")
        if not isinstance(inputs, str | list) or (isinstance(inputs, list) and not inputs):
            raise _invalid("input", "'input' must be a string or a non-empty array.")
        return ParsedRequest(kind, payload, model, False, False, _text_size(inputs) + 1, 0)

    if kind == CHAT:
        messages = payload.get("messages")
        if messages is None:
            raise _missing("messages")
        if not isinstance(messages, list) or not messages:
            raise _invalid("messages", "'messages' must be a non-empty array.")
        prompt_size = sum(_text_size(m.get("content")) + 1 if isinstance(m, dict) else 1 for m in messages)
    else:
        prompt = payload.get("prompt")
        if prompt is None:
            raise _missing("prompt")
        prompt_size = _text_size(prompt) + 1

    n = _bounded_int(payload, "n", config.n_cap) or 1
    limit_name = "max_completion_tokens" if payload.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _bounded_int(payload, limit_name, config.max_tokens_cap) or config.default_max_tokens
    stream = payload.get("stream") is True
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _invalid("stream_options", "'stream_options' must be an object.")
    include_usage = stream and bool(options and options.get("include_usage"))
    # A list prompt for completions is several prompts, each answered n times.
    prompts = len(payload["prompt"]) if kind == COMPLETIONS and _is_prompt_list(payload["prompt"]) else 1
    return ParsedRequest(kind, payload, model, stream, include_usage, prompt_size, max_tokens * n * prompts)


def _is_prompt_list(prompt: Any) -> bool:
    return isinstance(prompt, list) and bool(prompt) and not isinstance(prompt[0], int)
