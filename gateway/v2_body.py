"""Checking an Open Inference Protocol (v2) request before it goes upstream, and counting its inferences.

The body goes upstream as the client sent it; the gateway reads only its JSON: the whole body, or with the binary
tensor data extension (``Inference-Header-Content-Length: N``) its first N bytes, the tensor bytes after them passing
through unread. It checks what the gateway itself relies on and what a model server would choke on before any
model runs: the JSON bounds every route has (size, nesting), the shape of ``inputs`` (names, data types, shapes of
bounded non-negative integers), that each input has its ``data`` or its binary size, and that the binary sizes add
up to the bytes after the header. Whether the data fits the model is the model server's to say (its 400 reaches the
client as it is).

Inferences are counted from the batch dimension: the first dimension of the first input's shape (1 for a scalar).
"""

from __future__ import annotations

from typing import Any

from controlplane.contracts.protocols import DATATYPES
from gateway.errors import GatewayError, invalid_request
from gateway.v2_paths import V2Route
from gateway.validation import V2_INFER, V2_METADATA, ParsedRequest, load_json

MAX_INPUTS = 256  # tensors in one request; models with more inputs than this are not what v2 over REST serves
MAX_DIMS = 16
MAX_DIMENSION = 2**31 - 1  # a dimension above this overflows the int32 most servers keep shapes in
MAX_NAME_CHARS = 256


def _invalid(message: str) -> GatewayError:
    return invalid_request(message, None, "invalid_value")


def parse_metadata(route: V2Route) -> ParsedRequest:
    """A model metadata request: nothing to read, nothing to reserve."""
    return ParsedRequest(V2_METADATA, {}, route.model, False, False, 0, 0, v2_path=route.upstream_rest)


def parse_infer(body: bytes, header: bytes | None, route: V2Route) -> ParsedRequest:
    """The checked infer request; raises a 400 ``GatewayError`` that says what is wrong."""
    json_part, binary_size, header_digits = _split(body, header)
    payload = load_json(json_part)
    if not isinstance(payload, dict):
        raise invalid_request("The request body must be a JSON object.", None, "invalid_json")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise invalid_request("'inputs' must be a non-empty array of tensors.", "inputs", "invalid_value")
    if len(inputs) > MAX_INPUTS:
        raise _invalid(f"'inputs' has {len(inputs)} tensors, more than this gateway's limit of {MAX_INPUTS}.")
    declared = 0
    for index, tensor in enumerate(inputs):
        declared += _check_tensor(index, tensor, binary_size is not None)
    if binary_size is not None and declared != binary_size:
        raise _invalid(
            f"The inputs' binary_data_size add up to {declared} bytes, but {binary_size} follow the JSON header."
        )
    _check_optional(payload)
    inferences = _batch_of(inputs[0])
    return ParsedRequest(
        V2_INFER,
        payload,
        route.model,
        False,
        False,
        0,
        0,
        units=inferences,
        raw=body,
        v2_path=route.upstream_rest,
        inference_header=header_digits,
    )


def _split(body: bytes, header: bytes | None) -> tuple[bytes, int | None, str]:
    """(the JSON header, the bytes after it or None without the extension, the header's length as sent upstream)."""
    if header is None:
        return body, None, ""
    text = header.strip()
    if not text.isdigit() or len(text) > 12:
        raise _invalid("'Inference-Header-Content-Length' must be a whole number of bytes.")
    length = int(text)
    if length == 0 or length > len(body):
        raise _invalid(
            f"'Inference-Header-Content-Length' is {length}, but the body has {len(body)} bytes: the JSON header must "
            "be part of it."
        )
    return body[:length], len(body) - length, str(length)


def _check_tensor(index: int, tensor: Any, binary: bool) -> int:
    """Check one input tensor; returns the binary bytes it declares (0 when its data is in the JSON)."""
    where = f"inputs[{index}]"
    if not isinstance(tensor, dict):
        raise _invalid(f"{where} must be an object with 'name', 'shape', 'datatype' and 'data'.")
    name = tensor.get("name")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
        raise _invalid(f"{where}.name must be a non-empty string of at most {MAX_NAME_CHARS} characters.")
    where = f"input '{name}'"
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise _invalid(f"{where}: 'datatype' must be one of {', '.join(sorted(DATATYPES))}.")
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DIMS
        or not all(type(d) is int and 0 <= d <= MAX_DIMENSION for d in shape)
    ):
        raise _invalid(f"{where}: 'shape' must be an array of at most {MAX_DIMS} integers from 0 to {MAX_DIMENSION}.")
    parameters = tensor.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise _invalid(f"{where}: 'parameters' must be an object.")
    size = (parameters or {}).get("binary_data_size")
    if size is None:
        if "data" not in tensor:
            raise _invalid(f"{where} has no 'data'" + (" and no 'binary_data_size'." if binary else "."))
        return 0
    if not binary:
        raise _invalid(f"{where} has a binary_data_size, but the request has no 'Inference-Header-Content-Length'.")
    if type(size) is not int or size < 0:
        raise _invalid(f"{where}: 'binary_data_size' must be a non-negative integer.")
    if "data" in tensor:
        raise _invalid(f"{where} has both 'data' and a binary_data_size.")
    return size


def _check_optional(payload: dict[str, Any]) -> None:
    request_id = payload.get("id")
    if request_id is not None and (not isinstance(request_id, str) or len(request_id) > MAX_NAME_CHARS):
        raise _invalid(f"'id' must be a string of at most {MAX_NAME_CHARS} characters.")
    parameters = payload.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise _invalid("'parameters' must be an object.")
    outputs = payload.get("outputs")
    if outputs is None:
        return
    if not isinstance(outputs, list) or len(outputs) > MAX_INPUTS:
        raise _invalid(f"'outputs' must be an array of at most {MAX_INPUTS} requested outputs.")
    for index, output in enumerate(outputs):
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise _invalid(f"outputs[{index}] must be an object with a 'name'.")


def _batch_of(tensor: dict[str, Any]) -> int:
    shape: list[int] = tensor["shape"]
    return shape[0] if shape else 1
