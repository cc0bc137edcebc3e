"""Validation of the JSON bodies of ``/v1/chat/completions`` and ``/v1/completions``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from modelserver.asgi import HttpError
from modelserver.tokens import chat_prompt_text, count_tokens

CHAT = "chat"
COMPLETION = "completion"
MAX_CHOICES = 16


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate: one entry in ``prompts`` per prompt, each answered ``n`` times."""

    kind: str  # CHAT or COMPLETION
    model: str
    prompts: tuple[str, ...]
    prompt_tokens: int
    n: int
    max_tokens: int
    stream: bool
    include_usage: bool
    seed: int | None


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, f"We could not parse the JSON body of your request: {exc}", "invalid_json") from exc
    if not isinstance(payload, dict):
        raise HttpError(400, "The request body must be a JSON object.", "invalid_request")
    return payload


def _missing(param: str) -> HttpError:
    return HttpError(400, f"Missing required parameter: '{param}'.", "missing_required_parameter", param)


def _invalid(param: str, message: str) -> HttpError:
    return HttpError(400, message, "invalid_value", param)


def require_model(payload: dict[str, Any]) -> str:
    model = payload.get("model")
    if model is None:
        raise _missing("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model", "'model' must be a non-empty string.")
    return model


def _int_field(payload: dict[str, Any], name: str, default: int, minimum: int, maximum: int | None = None) -> int:
    value = payload.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum and value > maximum):
        bound = f" and at most {maximum}" if maximum else ""
        raise _invalid(name, f"'{name}' must be an integer of at least {minimum}{bound}.")
    return value


def _stream_fields(payload: dict[str, Any]) -> tuple[bool, bool]:
    stream = payload.get("stream") is True
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _invalid("stream_options", "'stream_options' must be an object.")
    include_usage = stream and bool(options and options.get("include_usage"))
    return stream, include_usage


def _seed(payload: dict[str, Any]) -> int | None:
    seed = payload.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _invalid("seed", "'seed' must be an integer.")
    return seed


def parse_chat_request(payload: dict[str, Any], default_max_tokens: int) -> GenerationRequest:
    model = require_model(payload)
    messages = payload.get("messages")
    if messages is None:
        raise _missing("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages", "'messages' must be a non-empty array.")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _invalid(f"messages[{i}]", f"messages[{i}] must be an object with a 'role'.")
    # max_completion_tokens is the newer name; OpenAI takes either.
    limit_name = "max_completion_tokens" if payload.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _int_field(payload, limit_name, default_max_tokens, 1)
    stream, include_usage = _stream_fields(payload)
    text = chat_prompt_text(messages)
    return GenerationRequest(
        kind=CHAT,
        model=model,
        prompts=(text,),
        prompt_tokens=count_tokens(text),
        n=_int_field(payload, "n", 1, 1, MAX_CHOICES),
        max_tokens=max_tokens,
        stream=stream,
        include_usage=include_usage,
        seed=_seed(payload),
    )


def is_token_array(value: Any) -> bool:
    return (
        isinstance(value, list) and bool(value) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
    )


def _completion_prompts(prompt: Any) -> list[tuple[str, int]]:
    """(text, token count) per prompt; token arrays are seeded by their ids and counted by their length."""
    if isinstance(prompt, str):
        return [(prompt, count_tokens(prompt))]
    if is_token_array(prompt):
        return [(" ".join(map(str, prompt)), len(prompt))]
    if isinstance(prompt, list) and prompt:
        prompts: list[tuple[str, int]] = []
        for item in prompt:
            if isinstance(item, str):
                prompts.append((item, count_tokens(item)))
            elif is_token_array(item):
                prompts.append((" ".join(map(str, item)), len(item)))
            else:
                break
        else:
            return prompts
    raise _invalid("prompt", "'prompt' must be a string, an array of strings, or token arrays.")


def parse_completion_request(payload: dict[str, Any], default_max_tokens: int) -> GenerationRequest:
    model = require_model(payload)
    if payload.get("prompt") is None:
        raise _missing("prompt")
    prompts = _completion_prompts(payload["prompt"])
    stream, include_usage = _stream_fields(payload)
    return GenerationRequest(
        kind=COMPLETION,
        model=model,
        prompts=tuple(text for text, _ in prompts),
        prompt_tokens=sum(count for _, count in prompts),
        n=_int_field(payload, "n", 1, 1, MAX_CHOICES),
        max_tokens=_int_field(payload, "max_tokens", default_max_tokens, 1),
        stream=stream,
        include_usage=include_usage,
        seed=_seed(payload),
    )
