"""v2 mode: the Open Inference Protocol over REST, driven by the official tritonclient and by raw HTTP."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.modelserver.test_ranker import GOLDEN
from tests.support.modelserver import HttpAnswer, MakeServer, RunningServer, start_server, wait_until

MODEL = "acme/ranker"  # a name with a slash, as deployments' model names often have
USERS = np.array([pair[0] for pair, _ in GOLDEN], dtype=np.int64)
ITEMS = np.array([pair[1] for pair, _ in GOLDEN], dtype=np.int64)
SCORES = [score for _, score in GOLDEN]
INFER = f"/v2/models/{MODEL}/infer"


@pytest.fixture(scope="module")
def ranker_server() -> Iterator[RunningServer]:
    server = start_server("--protocol", "v2", "--model-name", MODEL)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _clear_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "ranker_server" in request.fixturenames:
        server = request.getfixturevalue("ranker_server")
        server.set_faults(error_rate=0, stall_ms=0, startup_delay_ms=0)


@pytest.fixture
def client(ranker_server: RunningServer) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(f"{ranker_server.host}:{ranker_server.port}", network_timeout=20)
    yield client
    client.close()


def send(
    server: RunningServer, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> HttpAnswer:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return HttpAnswer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


def infer_json(server: RunningServer, body: dict[str, Any], path: str = INFER) -> HttpAnswer:
    return send(server, "POST", path, orjson.dumps(body), {"content-type": "application/json"})


def pair_inputs(users: list[int], items: list[int], *, datatype: str = "INT64") -> list[dict[str, object]]:
    return [
        {"name": "user_id", "datatype": datatype, "shape": [len(users)], "data": users},
        {"name": "item_id", "datatype": "INT64", "shape": [len(items)], "data": items},
    ]


def triton_inputs(users: np.ndarray, items: np.ndarray, *, binary: bool) -> list[triton.InferInput]:
    inputs = []
    for name, values in (("user_id", users), ("item_id", items)):
        tensor = triton.InferInput(name, list(values.shape), "INT64")
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    return inputs


def assert_v2_error(answer: HttpAnswer, status: int, words: str = "") -> None:
    assert answer.status == status, answer.body
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    assert words in body["error"]


# -- health, readiness and metadata through the official client ----------------------------------------------


def test_it_is_live_and_ready(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, "1")


def test_it_serves_only_its_own_model_and_version(client: triton.InferenceServerClient) -> None:
    assert not client.is_model_ready("acme/other")
    assert not client.is_model_ready(MODEL, "2")


def test_it_describes_the_server(client: triton.InferenceServerClient) -> None:
    assert client.get_server_metadata() == {
        "name": "frontdoor-modelserver",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data"],
    }


@pytest.mark.parametrize("version", ["", "1"])
def test_it_describes_the_model_with_typed_tensors(client: triton.InferenceServerClient, version: str) -> None:
    assert client.get_model_metadata(MODEL, version) == {
        "name": MODEL,
        "versions": ["1"],
        "platform": "frontdoor-numpy",
        "inputs": [
            {"name": "user_id", "datatype": "INT64", "shape": [-1]},
            {"name": "item_id", "datatype": "INT64", "shape": [-1]},
        ],
        "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1]}],
    }


def test_it_answers_readiness_in_json(ranker_server: RunningServer) -> None:
    assert send(ranker_server, "GET", "/v2/health/live").json() == {"live": True}
    assert send(ranker_server, "GET", "/v2/health/ready").json() == {"ready": True}
    assert send(ranker_server, "GET", f"/v2/models/{MODEL}/versions/1/ready").json() == {"name": MODEL, "ready": True}


# -- infer -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize("binary_out", [True, False, None], ids=["binary-out", "json-out", "default-out"])
def test_it_scores_pairs_with_the_official_client(
    client: triton.InferenceServerClient, binary_in: bool, binary_out: bool | None
) -> None:
    outputs = None if binary_out is None else [triton.InferRequestedOutput("score", binary_data=binary_out)]
    result = client.infer(MODEL, triton_inputs(USERS, ITEMS, binary=binary_in), outputs=outputs, request_id="req-7")
    scores = result.as_numpy("score")
    assert scores is not None and scores.dtype == np.float32 and scores.shape == (len(GOLDEN),)
    assert scores.tolist() == pytest.approx(SCORES, abs=1e-3)
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (MODEL, "1", "req-7")
    (output,) = response["outputs"]
    sent_binary = binary_out is not False  # the client asks for binary outputs unless told otherwise
    assert ("data" in output) is not sent_binary
    assert (output.get("parameters", {}).get("binary_data_size") == 4 * len(GOLDEN)) is sent_binary


def test_it_takes_a_column_of_ids_and_the_version_path(client: triton.InferenceServerClient) -> None:
    inputs = triton_inputs(USERS.reshape(-1, 1), ITEMS.reshape(-1, 1), binary=True)
    result = client.infer(MODEL, inputs, model_version="1")
    assert result.as_numpy("score").tolist() == pytest.approx(SCORES, abs=1e-3)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_it_takes_a_compressed_request(client: triton.InferenceServerClient, algorithm: str) -> None:
    inputs = triton_inputs(USERS, ITEMS, binary=True)
    result = client.infer(MODEL, inputs, request_compression_algorithm=algorithm)
    assert result.as_numpy("score").tolist() == pytest.approx(SCORES, abs=1e-3)


def test_it_answers_a_plain_json_request_in_json(ranker_server: RunningServer) -> None:
    answer = infer_json(ranker_server, {"inputs": pair_inputs([0, 42], [5, 0])})
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/json"
    assert "inference-header-content-length" not in answer.headers
    body = answer.json()
    assert "id" not in body
    (output,) = body["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("score", "FP32", [2])
    assert output["data"] == pytest.approx([0.200415, 0.783114], abs=1e-3)


def test_it_answers_binary_outputs_after_the_json_header(ranker_server: RunningServer) -> None:
    body = {"inputs": pair_inputs([0, 42], [5, 0]), "parameters": {"binary_data_output": True}}
    answer = infer_json(ranker_server, body)
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/octet-stream"
    length = int(answer.headers["inference-header-content-length"])
    header = orjson.loads(answer.body[:length])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert np.frombuffer(answer.body[length:], "<f4").tolist() == pytest.approx([0.200415, 0.783114], abs=1e-3)


def test_it_scores_the_largest_batch_it_serves(client: triton.InferenceServerClient) -> None:
    rows = 65_536
    users = np.arange(rows, dtype=np.int64) % 1000
    items = np.arange(rows, dtype=np.int64) % 500
    scores = client.infer(MODEL, triton_inputs(users, items, binary=True)).as_numpy("score")
    assert scores.shape == (rows,)
    assert ((scores > 0) & (scores < 1)).all()


def test_it_scores_an_empty_batch(client: triton.InferenceServerClient) -> None:
    empty = np.array([], dtype=np.int64)
    assert client.infer(MODEL, triton_inputs(empty, empty, binary=True)).as_numpy("score").shape == (0,)


# -- refusals ---------------------------------------------------------------------------------------------------


def test_it_refuses_a_wrong_datatype_through_the_client(client: triton.InferenceServerClient) -> None:
    users = triton.InferInput("user_id", [2], "INT32")
    users.set_data_from_numpy(np.array([0, 1], dtype=np.int32))
    items = triton.InferInput("item_id", [2], "INT64")
    items.set_data_from_numpy(np.array([0, 1], dtype=np.int64))
    with pytest.raises(InferenceServerException) as caught:
        client.infer(MODEL, [users, items])
    assert caught.value.status() == "400"
    assert "must be INT64, not INT32" in caught.value.message()


def test_it_refuses_an_unknown_model_with_404_through_the_client(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("acme/other")
    assert caught.value.status() == "404"
    with pytest.raises(InferenceServerException) as caught:
        client.infer("acme/other", triton_inputs(USERS, ITEMS, binary=True))
    assert caught.value.status() == "404"
    assert "unknown model" in caught.value.message()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"inputs": pair_inputs([0, 1], [0, 1], datatype="FP32")}, "must be INT64, not FP32"),
        (
            {
                "inputs": [
                    {"name": "user_id", "datatype": "INT64", "shape": [3], "data": [0, 1]},
                    pair_inputs([], [1, 2, 3])[1],
                ]
            },
            "3 elements",
        ),
        ({"inputs": pair_inputs([0, 1], [0])}, "same batch size"),
        ({"inputs": pair_inputs([1000], [0])}, "'user_id'[0] is 1000"),
        ({"inputs": pair_inputs([0, 5], [3, -1])}, "'item_id'[1] is -1"),
        ({"inputs": pair_inputs([0], [0])[:1]}, "missing input 'item_id'"),
        ({"inputs": [*pair_inputs([0], [0]), {"name": "x", "datatype": "INT64", "shape": [1], "data": [1]}]}, "'x'"),
        ({"inputs": pair_inputs([0], [0]), "outputs": [{"name": "rank"}]}, "unknown output 'rank'"),
        (
            {
                "inputs": [
                    {"name": "user_id", "datatype": "INT64", "shape": [1, 2], "data": [0, 1]},
                    pair_inputs([], [1])[1],
                ]
            },
            "shape [-1] or [-1, 1]",
        ),
        (
            {
                "inputs": [
                    {"name": "user_id", "datatype": "INT64", "shape": [65_537], "data": []},
                    {"name": "item_id", "datatype": "INT64", "shape": [65_537], "data": []},
                ]
            },
            "at most 65536",
        ),
    ],
)
def test_it_refuses_bad_inputs_with_400(ranker_server: RunningServer, body: dict[str, object], words: str) -> None:
    assert_v2_error(infer_json(ranker_server, body), 400, words)


def test_it_refuses_bad_json_with_400(ranker_server: RunningServer) -> None:
    assert_v2_error(send(ranker_server, "POST", INFER, b'{"inputs": ['), 400, "could not be parsed")


def test_it_refuses_a_header_length_past_the_body(ranker_server: RunningServer) -> None:
    answer = send(ranker_server, "POST", INFER, b'{"inputs": []}', {"Inference-Header-Content-Length": "999"})
    assert_v2_error(answer, 400, "inference-header-content-length")


def test_it_refuses_a_body_over_the_limit_with_413(ranker_server: RunningServer) -> None:
    assert_v2_error(send(ranker_server, "POST", INFER, b" " * (32 * 1024 * 1024 + 1)), 413)


def test_it_refuses_an_unknown_content_encoding(ranker_server: RunningServer) -> None:
    answer = send(ranker_server, "POST", INFER, b"{}", {"content-encoding": "br"})
    assert_v2_error(answer, 415, "Content-Encoding")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v2/models/acme/other", 404),
        ("GET", "/v2/models/acme", 404),
        ("GET", f"/v2/models/{MODEL}/versions/2", 404),
        ("POST", f"/v2/models/{MODEL}/versions/2/infer", 404),
        ("GET", f"/v2/models/{MODEL}/stats", 404),
        ("GET", "/v2/repository/index", 404),
        ("POST", "/v1/chat/completions", 404),
        ("POST", "/v1/images/generations", 404),
        ("GET", INFER, 405),
        ("POST", f"/v2/models/{MODEL}", 405),
        ("DELETE", "/v2/health/ready", 405),
    ],
)
def test_it_answers_unknown_routes_and_methods_in_the_v2_shape(
    ranker_server: RunningServer, method: str, path: str, status: int
) -> None:
    assert_v2_error(send(ranker_server, method, path, b"{}" if method == "POST" else None), status)


# -- faults, readiness, metrics ---------------------------------------------------------------------------------


def test_it_fails_infer_in_the_v2_shape_when_an_error_is_injected(ranker_server: RunningServer) -> None:
    before = ranker_server.metric("modelserver_injected_errors_total")
    ranker_server.set_faults(error_rate=1)
    answer = infer_json(ranker_server, {"inputs": pair_inputs([0], [0])})
    assert_v2_error(answer, 500, "error_rate")
    assert ranker_server.metric("modelserver_injected_errors_total") == before + 1


def test_it_is_live_but_not_ready_during_the_startup_delay(
    ranker_server: RunningServer, client: triton.InferenceServerClient
) -> None:
    ranker_server.set_faults(startup_delay_ms=60_000)
    assert client.is_server_live()
    assert not client.is_server_ready()
    assert not client.is_model_ready(MODEL)
    assert send(ranker_server, "GET", "/v2/health/ready").json() == {"ready": False}
    assert send(ranker_server, "GET", f"/v2/models/{MODEL}/ready").json() == {"name": MODEL, "ready": False}
    assert ranker_server.request("GET", "/health").status == 503
    assert_v2_error(infer_json(ranker_server, {"inputs": pair_inputs([0], [0])}), 503, "not ready")


def test_it_counts_infer_requests_by_status(ranker_server: RunningServer) -> None:
    ok, bad = (
        'modelserver_requests_total{endpoint="infer",status="200"}',
        ('modelserver_requests_total{endpoint="infer",status="400"}'),
    )
    before = ranker_server.metrics()
    infer_json(ranker_server, {"inputs": pair_inputs([0], [0])})
    infer_json(ranker_server, {"inputs": pair_inputs([0], [9999])})
    after = ranker_server.metrics()
    assert after[ok] == before.get(ok, 0) + 1
    assert after[bad] == before.get(bad, 0) + 1
    assert 'vllm:num_requests_running{model_name="acme/ranker"}' in after


def test_it_holds_a_stalled_infer_in_the_running_gauge(ranker_server: RunningServer) -> None:
    ranker_server.set_faults(stall_ms=1500)
    answers: list[HttpAnswer] = []
    caller = threading.Thread(
        target=lambda: answers.append(infer_json(ranker_server, {"inputs": pair_inputs([0], [5])}))
    )
    caller.start()
    assert wait_until(lambda: ranker_server.metric("vllm:num_requests_running") == 1)
    caller.join(timeout=20)
    assert answers[0].status == 200
    assert ranker_server.metric("vllm:num_requests_running") == 0


def test_it_takes_the_protocol_from_the_environment(make_modelserver: MakeServer) -> None:
    server = make_modelserver(env={"MODELSERVER_PROTOCOL": "v2"})
    answer = send(server, "GET", "/v2/models/frontdoor-ranker")
    assert answer.status == 200
    assert answer.json()["name"] == "frontdoor-ranker"
    assert server.request("GET", "/v1/models").status == 404
