"""The v2 wire format on its own: splitting header and binary data, decoding tensors, encoding responses."""

from __future__ import annotations

import json
import random
import struct
from typing import Any

import numpy as np
import orjson
import pytest

from modelserver.asgi import V2Error
from modelserver.ranker import build_ranker
from modelserver.tensors import InferRequest, OutputTensor, decode_tensor, encode_response, parse_infer_request
from modelserver.v2_model import RankerModel


def _binary_body(header: dict[str, Any], *tensors: bytes) -> tuple[bytes, str]:
    head = orjson.dumps(header)
    return head + b"".join(tensors), str(len(head))


def _refusal(body: bytes, header_length: str | None = None) -> str:
    with pytest.raises(V2Error) as caught:
        request = parse_infer_request(body, header_length)
        for tensor in request.inputs:
            decode_tensor(tensor)
    assert caught.value.status == 400
    return caught.value.message


def test_it_splits_binary_inputs_in_input_order() -> None:
    first, second = np.array([1, 2, 3], "<i8"), np.array([[1.5], [2.5]], "<f4")
    header = {
        "inputs": [
            {"name": "a", "datatype": "INT64", "shape": [3], "parameters": {"binary_data_size": 24}},
            {"name": "j", "datatype": "INT32", "shape": [2], "data": [7, 8]},
            {"name": "b", "datatype": "FP32", "shape": [2, 1], "parameters": {"binary_data_size": 8}},
        ]
    }
    body, length = _binary_body(header, first.tobytes(), second.tobytes())
    request = parse_infer_request(body, length)
    a, j, b = (decode_tensor(tensor) for tensor in request.inputs)
    assert a.tolist() == [1, 2, 3]
    assert j.tolist() == [7, 8] and j.dtype == np.int32
    assert b.tolist() == [[1.5], [2.5]]


def test_it_decodes_length_prefixed_bytes_elements() -> None:
    raw = b"".join(struct.pack("<I", len(s)) + s for s in (b"ab", b"", b"xyz"))
    header = {
        "inputs": [{"name": "s", "datatype": "BYTES", "shape": [3], "parameters": {"binary_data_size": len(raw)}}]
    }
    body, length = _binary_body(header, raw)
    (tensor,) = parse_infer_request(body, length).inputs
    assert decode_tensor(tensor).tolist() == [b"ab", b"", b"xyz"]


def test_it_takes_nested_json_data_row_major() -> None:
    body = orjson.dumps({"inputs": [{"name": "x", "datatype": "INT64", "shape": [2, 2], "data": [[1, 2], [3, 4]]}]})
    (tensor,) = parse_infer_request(body, None).inputs
    assert decode_tensor(tensor).tolist() == [[1, 2], [3, 4]]


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"name": "x", "datatype": "INT64", "shape": [3], "data": [1, 2]}, "3 elements"),
        ({"name": "x", "datatype": "INT64", "shape": [2], "data": [1, True]}, "not INT64"),
        ({"name": "x", "datatype": "INT64", "shape": [2], "data": [1, 2.5]}, "not INT64"),
        ({"name": "x", "datatype": "INT64", "shape": [1], "data": [2**63]}, "out of range"),
        ({"name": "x", "datatype": "UINT8", "shape": [1], "data": [300]}, "out of range"),
        ({"name": "x", "datatype": "INT64", "shape": [2, 2], "data": [[1, 2], 3, 4]}, "same depth"),
        ({"name": "x", "datatype": "INT65", "shape": [1], "data": [1]}, "unknown 'datatype'"),
        ({"name": "x", "datatype": ["INT64"], "shape": [1], "data": [1]}, "unknown 'datatype'"),
        ({"name": "x", "datatype": "INT64", "shape": [-1], "data": [1]}, "non-negative"),
        ({"name": "x", "datatype": "INT64", "shape": [1] * 9, "data": [1]}, "at most 8"),
        ({"name": "x", "datatype": "INT64", "shape": [1]}, "either 'data'"),
        ({"name": "x", "datatype": "INT64", "shape": [1], "data": 1}, "must be an array"),
        ({"name": "", "datatype": "INT64", "shape": [1], "data": [1]}, "non-empty string 'name'"),
        (
            {"name": "x", "datatype": "INT64", "shape": [1], "parameters": {"shared_memory_region": "r"}},
            "shared memory",
        ),
    ],
)
def test_it_refuses_a_malformed_input(entry: dict[str, object], words: str) -> None:
    assert words in _refusal(orjson.dumps({"inputs": [entry]}))


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"inputs": [', "could not be parsed"),
        (b"[1]", "must be an object"),
        (b'{"inputs": []}', "non-empty array"),
        (b'{"id": 5, "inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [1]}]}', "'id'"),
        (
            b'{"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [1]},'
            b' {"name": "x", "datatype": "INT64", "shape": [1], "data": [1]}]}',
            "twice",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [1]}],'
            b' "outputs": [{"name": "y", "parameters": {"classification": 3}}]}',
            "classification",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [1]}],'
            b' "parameters": {"binary_data_output": "yes"}}',
            "true or false",
        ),
    ],
)
def test_it_refuses_a_malformed_header(body: bytes, words: str) -> None:
    assert words in _refusal(body)


def test_it_refuses_binary_data_that_does_not_add_up() -> None:
    header = {"inputs": [{"name": "x", "datatype": "INT64", "shape": [2], "parameters": {"binary_data_size": 16}}]}
    body, length = _binary_body(header, b"\0" * 8)
    assert "add up to 16 bytes but 8 follow" in _refusal(body, length)


def test_it_refuses_a_binary_size_that_does_not_fit_the_shape() -> None:
    header = {"inputs": [{"name": "x", "datatype": "INT64", "shape": [3], "parameters": {"binary_data_size": 16}}]}
    body, length = _binary_body(header, b"\0" * 16)
    assert "3 elements" in _refusal(body, length)


def test_it_refuses_bytes_elements_that_overrun_their_tensor() -> None:
    raw = struct.pack("<I", 10) + b"abc"
    header = {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 7}}]}
    body, length = _binary_body(header, raw)
    assert "longer than the bytes" in _refusal(body, length)


@pytest.mark.parametrize("length", ["0", "-1", "abc", "100000", "\u00b2", "9" * 5000])
def test_it_refuses_a_header_length_outside_the_body(length: str) -> None:
    assert "inference-header-content-length" in _refusal(b'{"inputs": []}', length)


def test_it_encodes_binary_outputs_after_the_json_header() -> None:
    request = InferRequest(id="r1", inputs=(), outputs=None, binary_output=True)
    scores = np.array([0.25, 0.5], dtype=np.float32)
    body, length = encode_response("m", "1", request, [OutputTensor("score", "FP32", scores)])
    assert length is not None
    header = orjson.loads(body[:length])
    assert header == {
        "model_name": "m",
        "model_version": "1",
        "id": "r1",
        "outputs": [{"name": "score", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}],
    }
    assert np.frombuffer(body[length:], "<f4").tolist() == [0.25, 0.5]


def test_it_encodes_json_outputs_when_binary_is_not_asked_for() -> None:
    request = InferRequest(id=None, inputs=(), outputs=None, binary_output=False)
    body, length = encode_response("m", "1", request, [OutputTensor("score", "FP32", np.array([0.5], "<f4"))])
    assert length is None
    assert orjson.loads(body)["outputs"] == [{"name": "score", "datatype": "FP32", "shape": [1], "data": [0.5]}]


_ODD_VALUES: list[Any] = [None, True, 0, -1, 2**64, 1.5, "", "INT64", "BYTES", [], {}, [1], [[1], [2]], [-1], [65_537]]


def _random_value(rnd: random.Random, depth: int = 0) -> Any:
    roll = rnd.random()
    if depth < 3 and roll < 0.3:
        keys = ["name", "datatype", "shape", "data", "parameters", "binary_data_size", "inputs", "outputs"]
        return {rnd.choice(keys): _random_value(rnd, depth + 1) for _ in range(rnd.randint(0, 4))}
    if depth < 3 and roll < 0.45:
        return [_random_value(rnd, depth + 1) for _ in range(rnd.randint(0, 3))]
    return rnd.choice(_ODD_VALUES)


def _random_input(rnd: random.Random) -> dict[str, Any]:
    tensor: dict[str, Any] = {
        "name": rnd.choice(["user_id", "item_id", "x"]),
        "datatype": rnd.choice(["INT64", "INT32", "BYTES", "FP32", "BF16", "BOOL"]),
        "shape": rnd.choice([[2], [2, 1], [1], [0], [3], [2, 2]]),
    }
    if rnd.random() < 0.5:
        tensor["data"] = rnd.choice([[0, 1], [[0], [1]], [1], [], ["a", "b"], [True, False], [1.0, 2.0], [0, 600]])
    else:
        tensor["parameters"] = {"binary_data_size": rnd.choice([0, 4, 7, 8, 16])}
    for key in list(tensor):
        if rnd.random() < 0.1:
            tensor[key] = _random_value(rnd)
    return tensor


def test_it_answers_any_request_with_outputs_or_a_400() -> None:
    """Random headers and tails through the whole infer path: nothing but a V2Error 400 may come out."""
    model = RankerModel("m", build_ranker())
    rnd = random.Random(11)
    for _ in range(3000):
        header = _random_value(rnd) if rnd.random() < 0.3 else {"inputs": [_random_input(rnd) for _ in range(3)]}
        head = json.dumps(header).encode()
        length = rnd.choice([None, str(len(head)), str(len(head) + 1)])
        body = head + rnd.randbytes(rnd.choice([0, 8, 16, 24])) if length else head
        try:
            request = parse_infer_request(body, length)
            encode_response("m", "1", request, model.run(model.prepare(request)))
        except V2Error as error:
            assert error.status == 400, error.message
