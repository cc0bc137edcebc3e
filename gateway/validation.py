"""Checking request bodies before anything goes upstream, and bounding their token cost.

The reservation is an upper bound on what the upstream may spend:

- **Prompt**: the body's size in bytes. Byte-level BPE yields at most one token per byte of UTF-8 (a rare CJK
  character or an emoji may take one token per byte; one per *character* would under-count them), and the
  simulator's tokenizer at most one per character. Every piece of a prompt is inside the body once, each byte of
  it counted at most once: message text and names, roles, tool and function definitions, tool-call arguments,
  ``response_format`` schemas, token ids (a digit and a separator each at least). The JSON framing of a message
  (``{"role":"user","content":""}``, 28 bytes) is longer than the framing a chat template gives it (a handful of
  tokens), and the fields that are no prompt at all (``model``, sampling options) only add slack. It costs one
  ``len()`` and walks nothing, so no tenant data is ever recursed into.
- **Completion**: the largest per-choice limit the upstream may honour, times the sequences it generates per
  prompt (``max(n, best_of)``), times the prompts (a completions ``prompt`` list). The same per-choice limit is
  written into the body sent upstream (``generation.upstream_body``), so the upstream cannot generate more.

Bodies nested deeper than ``MAX_JSON_DEPTH`` are refused here, before admission: orjson will not encode past 254
levels, and deep nesting costs a parser stack per level.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from controlplane.contracts.jsonlimits import MAX_JSON_DEPTH, depth_exceeds, may_exceed_depth
from gateway.config import GatewayConfig
from gateway.errors import GatewayError, invalid_request

CHAT = "chat"
COMPLETIONS = "completions"
EMBEDDINGS = "embeddings"
IMAGES = "images"
# The Open Inference Protocol's model routes (``gateway.v2_body``): infer, and the model's metadata.
V2_INFER = "v2_infer"
V2_METADATA = "v2_metadata"

IMAGE_FORMATS = ("b64_json",)  # "url" would need the gateway to keep files: refused with a clear error
MAX_IMAGE_PROMPT_CHARS = 32_000
MAX_IMAGE_SIDE = 4096


@dataclass(slots=True)
class ParsedRequest:
    kind: str
    payload: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool  # the client asked for the usage chunk
    prompt_estimate: int
    max_tokens: int  # completion tokens reserved in all: choice_limit x sequences x prompts (0 for embeddings)
    choice_limit: int = 0  # completion tokens one sequence may have; written into the upstream body
    # Images asked (images) or inferences asked, the batch dimension (v2 infer): what a success is metered in.
    units: int = 0
    # v2: the body as the client sent it (it goes upstream unchanged), the path after the model's name
    # ("/versions/<v>" and/or "/infer"), and the checked length of the JSON header before binary tensors ("" none).
    raw: bytes = b""
    v2_path: str = ""
    inference_header: str = ""


def _missing(param: str) -> GatewayError:
    return invalid_request(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def _invalid(param: str, message: str) -> GatewayError:
    return invalid_request(message, param, "invalid_value")


def _too_deep() -> GatewayError:
    return invalid_request(
        f"The JSON body of your request nests deeper than {MAX_JSON_DEPTH} levels.", None, "nesting_too_deep"
    )


def _bounded_int(payload: dict[str, Any], name: str, cap: int) -> int | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _invalid(name, f"'{name}' must be a positive integer.")
    if value > cap:
        raise _invalid(name, f"'{name}' is {value}, above this gateway's limit of {cap}.")
    return value


def load_json(body: bytes) -> Any:
    """The parsed body; 400 ``invalid_json`` or ``nesting_too_deep`` for one that does not parse or nests too deep."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):  # orjson's own nesting limit (1024), far past ours
            raise _too_deep() from None
        raise invalid_request("We could not parse the JSON body of your request.", None, "invalid_json") from None
    # The exact walk runs only for bodies with more brackets than the limit, which almost no request has.
    if may_exceed_depth(body) and depth_exceeds(payload):
        raise _too_deep()
    return payload


def parse_request(kind: str, body: bytes, config: GatewayConfig) -> ParsedRequest:
    payload = load_json(body)
    if not isinstance(payload, dict):
        raise invalid_request("The request body must be a JSON object.", None, "invalid_json")
    model = payload.get("model")
    if model is None:
        raise _missing("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model", "'model' must be a non-empty string.")
    prompt_estimate = len(body)

    if kind == IMAGES:
        return _images(payload, model, config)
    if kind == EMBEDDINGS:
        inputs = payload.get("input")
        if inputs is None:
            raise _missing("input")
        if not isinstance(inputs, str | list) or (isinstance(inputs, list) and not inputs):
            raise _invalid("input", "'input' must be a string or a non-empty array.")
        return ParsedRequest(kind, payload, model, False, False, prompt_estimate, 0)

    prompts = 1
    if kind == CHAT:
        messages = payload.get("messages")
        if messages is None:
            raise _missing("messages")
        if not isinstance(messages, list) or not messages:
            raise _invalid("messages", "'messages' must be a non-empty array.")
    else:
        prompt = payload.get("prompt")
        if prompt is None:
            raise _missing("prompt")
        # A list prompt for completions is several prompts, each answered n (best_of) times.
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
            prompts = len(prompt)

    sequences = max(_bounded_int(payload, "n", config.n_cap) or 1, _bounded_int(payload, "best_of", config.n_cap) or 1)
    # Both names are checked wherever they appear, since a server may read either (vLLM's chat prefers
    # max_completion_tokens, its completions and TGI read only max_tokens). The reservation takes the larger one
    # rather than refusing two different values: it can never be the smaller one a server ignores, and a client
    # that sends both (older SDKs fill in max_tokens) is not turned away. upstream_body sends that value.
    max_tokens = _bounded_int(payload, "max_tokens", config.max_tokens_cap) or 0
    max_completion_tokens = _bounded_int(payload, "max_completion_tokens", config.max_tokens_cap) or 0
    choice_limit = max(max_tokens, max_completion_tokens) or config.default_max_tokens
    stream = payload.get("stream") is True
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _invalid("stream_options", "'stream_options' must be an object.")
    include_usage = stream and bool(options and options.get("include_usage"))
    return ParsedRequest(
        kind,
        payload,
        model,
        stream,
        include_usage,
        prompt_estimate,
        choice_limit * sequences * prompts,
        choice_limit,
    )


def _images(payload: dict[str, Any], model: str, config: GatewayConfig) -> ParsedRequest:
    """An image generation: ``prompt``, ``n``, ``size`` and ``response_format`` checked; no tokens to reserve."""
    prompt = payload.get("prompt")
    if prompt is None:
        raise _missing("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _invalid("prompt", "'prompt' must be a non-empty string.")
    if len(prompt) > MAX_IMAGE_PROMPT_CHARS:
        raise _invalid("prompt", f"'prompt' is longer than {MAX_IMAGE_PROMPT_CHARS} characters.")
    n = _bounded_int(payload, "n", config.n_cap) or 1
    size = payload.get("size")
    if size is not None and size != "auto" and not _image_size(size):
        raise _invalid("size", f"'size' must be 'auto' or '<width>x<height>', each 1 to {MAX_IMAGE_SIDE}.")
    response_format = payload.get("response_format")
    if response_format is not None and response_format not in IMAGE_FORMATS:
        raise _invalid(
            "response_format",
            "'response_format' must be 'b64_json': this gateway returns images in the response, never as URLs.",
        )
    if payload.get("stream") is True:
        raise _invalid("stream", "Streaming image generation is not supported: 'stream' must be false.")
    # The answer carries the images themselves; the upstream is asked for that whatever it would default to.
    payload["response_format"] = "b64_json"
    return ParsedRequest(IMAGES, payload, model, False, False, 0, 0, units=n)


def _image_size(size: object) -> bool:
    if not isinstance(size, str) or len(size) > 16 or not size.isascii():
        return False
    sides = size.split("x")
    return len(sides) == 2 and all(side.isdigit() and 0 < int(side) <= MAX_IMAGE_SIDE for side in sides)
