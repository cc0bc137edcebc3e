"""The Open Inference Protocol's tensors on the wire: the infer request (JSON, or JSON plus binary tensor data) and
the infer response (JSON ``data``, or the binary tensor data extension).

Binary layout (Triton's and KServe's): when ``Inference-Header-Content-Length: N`` is sent, the first N bytes of the
body are the JSON header and the rest holds, in input order, the bytes of every input whose ``parameters`` carry
``binary_data_size``: little-endian, row-major; a BYTES element is a 4-byte little-endian length and its bytes. The
response uses the same layout for the outputs asked for in binary. Every error here is a client's: a 400.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from modelserver.asgi import V2Error
from modelserver.protocol import DATATYPES, INFERENCE_HEADER_CONTENT_LENGTH

MAX_INPUTS = 64
MAX_OUTPUTS = 64
MAX_DIMS = 8
MAX_ID_CHARS = 256
_BYTES_PREFIX = struct.Struct("<I")

# Little-endian numpy types of the fixed-size datatypes (BF16 has none in numpy; BYTES is length-prefixed).
NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


def _bad(message: str) -> V2Error:
    return V2Error(400, message)


@dataclass(frozen=True)
class InputTensor:
    """One input as sent: its JSON ``data`` or its raw bytes (exactly one of the two is set)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: list[Any] | None
    raw: bytes | None

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None  # None: as the request's ``binary_data_output`` says


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: tuple[InputTensor, ...]
    outputs: tuple[RequestedOutput, ...] | None  # None (absent or empty): every output of the model
    binary_output: bool  # the request's ``parameters.binary_data_output``

    def wants_binary(self, output: str) -> bool:
        for requested in self.outputs or ():
            if requested.name == output and requested.binary is not None:
                return requested.binary
        return self.binary_output


@dataclass(frozen=True)
class _InputHeader:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Any
    binary_size: int | None


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary tail, by the ``Inference-Header-Content-Length`` header."""
    if header_length is None:
        return body, b""
    # ASCII digits only, and few of them: int() raises on "²" (a digit to isdigit) and on thousands of digits.
    digits = header_length.strip()
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 20) or not 0 < int(digits) <= len(body):
        raise _bad(
            f"{INFERENCE_HEADER_CONTENT_LENGTH} must be a whole number between 1 and the body's {len(body)} bytes."
        )
    split = int(digits)
    return body[:split], body[split:]


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(f"{what} must be an object.")
    return value


def _flag(parameters: dict[str, Any], name: str, what: str) -> bool | None:
    value = parameters.get(name)
    if value is not None and not isinstance(value, bool):
        raise _bad(f"{what} parameter '{name}' must be true or false.")
    return value


def _shape(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > MAX_DIMS:
        raise _bad(f"{what} 'shape' must be an array of at most {MAX_DIMS} dimensions.")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise _bad(f"{what} 'shape' must hold non-negative integers.")
    return tuple(value)


def _input_header(entry: Any, index: int) -> _InputHeader:
    what = f"inputs[{index}]"
    if not isinstance(entry, dict):
        raise _bad(f"{what} must be an object.")
    name, datatype = entry.get("name"), entry.get("datatype")
    if not isinstance(name, str) or not name:
        raise _bad(f"{what} must have a non-empty string 'name'.")
    what = f"input '{name[:64]}'"
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise _bad(f"{what} has an unknown 'datatype'; the protocol's are {', '.join(sorted(DATATYPES))}.")
    shape = _shape(entry.get("shape"), what)
    parameters = _object(entry.get("parameters"), f"{what} 'parameters'")
    if "shared_memory_region" in parameters:
        raise _bad("This server has no shared memory regions; send the tensor's data in the request.")
    size = parameters.get("binary_data_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise _bad(f"{what} 'binary_data_size' must be a non-negative integer.")
    has_data = "data" in entry
    if has_data == (size is not None):
        raise _bad(f"{what} must carry either 'data' or parameters.binary_data_size, not both or neither.")
    return _InputHeader(name, datatype, shape, entry.get("data"), size)


def _requested_outputs(value: Any) -> tuple[RequestedOutput, ...] | None:
    if value is None or value == []:
        return None
    if not isinstance(value, list) or len(value) > MAX_OUTPUTS:
        raise _bad(f"'outputs' must be an array of at most {MAX_OUTPUTS} objects.")
    outputs: list[RequestedOutput] = []
    for index, entry in enumerate(value):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise _bad(f"outputs[{index}] must be an object with a string 'name'.")
        parameters = _object(entry.get("parameters"), f"outputs[{index}] 'parameters'")
        if "shared_memory_region" in parameters:
            raise _bad("This server has no shared memory regions; ask for the output in the response.")
        if parameters.get("classification"):
            raise _bad("This server does not return classification outputs.")
        outputs.append(RequestedOutput(entry["name"], _flag(parameters, "binary_data", f"outputs[{index}]")))
    if len({output.name for output in outputs}) != len(outputs):
        raise _bad("'outputs' names an output twice.")
    return tuple(outputs)


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """The request's header and each input's data or bytes; the data itself is decoded by :func:`decode_tensor`."""
    header_bytes, tail = _split(body, header_length)
    try:
        header = orjson.loads(header_bytes)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"The request's JSON header could not be parsed: {exc}") from exc
    if not isinstance(header, dict):
        raise _bad("The request's JSON header must be an object.")
    request_id = header.get("id")
    if request_id is not None and (not isinstance(request_id, str) or len(request_id) > MAX_ID_CHARS):
        raise _bad(f"'id' must be a string of at most {MAX_ID_CHARS} characters.")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs or len(raw_inputs) > MAX_INPUTS:
        raise _bad(f"'inputs' must be a non-empty array of at most {MAX_INPUTS} tensors.")
    headers = [_input_header(entry, i) for i, entry in enumerate(raw_inputs)]
    if len({h.name for h in headers}) != len(headers):
        raise _bad("'inputs' names an input twice.")
    expected = sum(h.binary_size or 0 for h in headers)
    if expected != len(tail):
        raise _bad(
            f"The inputs' binary_data_size add up to {expected} bytes but {len(tail)} follow the JSON header "
            f"(its length goes in {INFERENCE_HEADER_CONTENT_LENGTH})."
        )
    inputs: list[InputTensor] = []
    offset = 0
    for h in headers:
        if h.binary_size is None:
            if not isinstance(h.data, list):
                raise _bad(f"input '{h.name}' 'data' must be an array.")
            inputs.append(InputTensor(h.name, h.datatype, h.shape, h.data, None))
        else:
            inputs.append(InputTensor(h.name, h.datatype, h.shape, None, tail[offset : offset + h.binary_size]))
            offset += h.binary_size
    parameters = _object(header.get("parameters"), "'parameters'")
    return InferRequest(
        id=request_id,
        inputs=tuple(inputs),
        outputs=_requested_outputs(header.get("outputs")),
        binary_output=bool(_flag(parameters, "binary_data_output", "the request's")),
    )


def _flatten(data: list[Any], dims: int) -> list[Any]:
    """Row-major elements of JSON ``data`` given flat or nested (up to the tensor's dimensions)."""
    flat = data
    for _ in range(max(dims - 1, 0)):
        if not any(isinstance(item, list) for item in flat):
            break
        if not all(isinstance(item, list) for item in flat):
            raise _bad("Nested 'data' must nest every element to the same depth.")
        flat = [element for item in flat for element in item]
    return flat


def _json_elements_fit(datatype: str, flat: list[Any]) -> bool:
    if datatype == "BYTES":
        return all(isinstance(v, str) for v in flat)
    if datatype == "BOOL":
        return all(isinstance(v, bool) for v in flat)
    if datatype.startswith(("FP", "BF")):
        return all(isinstance(v, int | float) and not isinstance(v, bool) for v in flat)
    return all(isinstance(v, int) and not isinstance(v, bool) for v in flat)


def _decode_bytes_elements(raw: bytes, count: int, name: str) -> npt.NDArray[np.object_]:
    elements: list[bytes] = []
    offset = 0
    while offset < len(raw) and len(elements) <= count:
        if offset + _BYTES_PREFIX.size > len(raw):
            raise _bad(f"input '{name}' ends inside a BYTES length prefix.")
        (length,) = _BYTES_PREFIX.unpack_from(raw, offset)
        offset += _BYTES_PREFIX.size
        if offset + length > len(raw):
            raise _bad(f"input '{name}' has a BYTES element longer than the bytes that follow it.")
        elements.append(raw[offset : offset + length])
        offset += length
    if len(elements) != count or offset != len(raw):
        raise _bad(f"input '{name}' holds a different number of BYTES elements than its shape's {count}.")
    return np.array(elements, dtype=np.object_)


def decode_tensor(tensor: InputTensor) -> npt.NDArray[Any]:
    """The input as a numpy array of its shape; its element count must match the shape."""
    count = tensor.elements
    mismatch = _bad(f"input '{tensor.name}' does not hold the {count} elements its shape {list(tensor.shape)} says.")
    if tensor.raw is not None:
        if tensor.datatype == "BYTES":
            return _decode_bytes_elements(tensor.raw, count, tensor.name).reshape(tensor.shape)
        dtype = NUMPY_DTYPES.get(tensor.datatype)
        if dtype is None:
            raise _bad(f"This server cannot decode {tensor.datatype} tensors.")
        if len(tensor.raw) != count * dtype.itemsize:
            raise mismatch
        return np.frombuffer(tensor.raw, dtype=dtype).reshape(tensor.shape)
    flat = _flatten(tensor.data or [], len(tensor.shape))
    if len(flat) != count:
        raise mismatch
    if not _json_elements_fit(tensor.datatype, flat):
        raise _bad(f"input '{tensor.name}' has 'data' elements that are not {tensor.datatype} values.")
    if tensor.datatype == "BYTES":
        return np.array([v.encode() for v in flat], dtype=np.object_).reshape(tensor.shape)
    dtype = NUMPY_DTYPES.get(tensor.datatype)
    if dtype is None:
        raise _bad(f"This server cannot decode {tensor.datatype} tensors.")
    try:
        return np.array(flat, dtype=dtype).reshape(tensor.shape)
    except (OverflowError, ValueError) as exc:
        raise _bad(f"input '{tensor.name}' has a value out of range for {tensor.datatype}.") from exc


@dataclass(frozen=True)
class OutputTensor:
    name: str
    datatype: str  # a key of NUMPY_DTYPES
    array: npt.NDArray[Any]


def encode_response(
    model_name: str, model_version: str, request: InferRequest, outputs: list[OutputTensor]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary tensor data follows it (else None)."""
    entries: list[dict[str, Any]] = []
    tail: list[bytes] = []
    for output in outputs:
        entry: dict[str, Any] = {"name": output.name, "datatype": output.datatype, "shape": list(output.array.shape)}
        if request.wants_binary(output.name):
            raw = np.ascontiguousarray(output.array, dtype=NUMPY_DTYPES[output.datatype]).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        else:
            entry["data"] = output.array.ravel().tolist()
        entries.append(entry)
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        response["id"] = request.id
    response["outputs"] = entries
    header = orjson.dumps(response)
    if not tail:
        return header, None
    return header + b"".join(tail), len(header)
