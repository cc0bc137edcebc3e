"""The Open Inference Protocol (v2) through the gateway: the official ``tritonclient`` against the built-in v2 model
server behind real gateway processes, with keys, tenants, limits, canaries, holding from zero and metering.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import numpy as np
import pytest
import redis
import tritonclient.http as triton

from controlplane.contracts.redis_names import wake_key
from tests.support.gateway import (
    BASE_PREFIX,
    Process,
    World,
    clear_prefix,
    start_gateway,
    start_modelserver,
    stop,
    usage_events,
)

UPSTREAM_MODEL = "frontdoor/ranker"  # what the replicas answer to; clients name the deployment
USERS = [1, 2, 3]
ITEMS = [10, 20, 30]
BODY = {
    "inputs": [
        {"name": "user_id", "shape": [3], "datatype": "INT64", "data": USERS},
        {"name": "item_id", "shape": [3], "datatype": "INT64", "data": ITEMS},
    ]
}


@pytest.fixture(scope="module")
def ranker(session_tmp: Path) -> Iterator[Process]:
    proc = start_modelserver(session_tmp, "--protocol", "v2", "--model-name", UPSTREAM_MODEL)
    yield proc
    stop(proc.proc)


@pytest.fixture(scope="module")
def scene(world: World, gateway: Process, ranker: Process, upstream: Process) -> dict[str, Any]:
    tenant = world.tenant()
    other = world.tenant()
    world.deployment(tenant, "ranker", [ranker.url], model=UPSTREAM_MODEL, protocol="v2")
    world.deployment(tenant, "chat", [upstream.url])
    world.deployment(other, "theirs", [ranker.url], model=UPSTREAM_MODEL, protocol="v2")
    scene = {"tenant": tenant, "key": world.key(tenant), "other_key": world.key(other)}
    world.publish(gateway)
    return scene


def client_for(gateway: Process) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(gateway.url.removeprefix("http://"))


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def tensors(binary: bool) -> tuple[list[triton.InferInput], list[triton.InferRequestedOutput]]:
    users = triton.InferInput("user_id", [3], "INT64")
    users.set_data_from_numpy(np.array(USERS, dtype=np.int64), binary_data=binary)
    items = triton.InferInput("item_id", [3], "INT64")
    items.set_data_from_numpy(np.array(ITEMS, dtype=np.int64), binary_data=binary)
    return [users, items], [triton.InferRequestedOutput("score", binary_data=binary)]


def direct_scores(ranker: Process) -> list[float]:
    answer = httpx.post(f"{ranker.url}/v2/models/{UPSTREAM_MODEL}/infer", json=BODY, timeout=10)
    assert answer.status_code == 200, answer.text
    return [float(x) for x in answer.json()["outputs"][0]["data"]]


def test_tritonclient_talks_to_the_gateway_as_to_a_triton_server(
    gateway: Process, ranker: Process, scene: dict[str, Any]
) -> None:
    client = client_for(gateway)
    headers = auth(scene["key"].full)
    assert client.is_server_live(headers=headers)
    assert client.is_server_ready(headers=headers)
    assert client.is_model_ready("ranker", headers=headers)
    server = client.get_server_metadata(headers=headers)
    assert server["name"] == "frontdoor" and "binary_tensor_data" in server["extensions"]
    metadata = client.get_model_metadata("ranker", headers=headers)
    assert metadata["name"] == "ranker"  # the deployment's name, not the replicas' model
    assert [t["name"] for t in metadata["inputs"]] == ["user_id", "item_id"]
    assert [(t["name"], t["datatype"]) for t in metadata["outputs"]] == [("score", "FP32")]

    expected = direct_scores(ranker)
    for binary in (True, False):
        inputs, outputs = tensors(binary)
        # A fresh dict each time: tritonclient writes its Inference-Header-Content-Length into the one it is given.
        result = client.infer("ranker", inputs, outputs=outputs, headers=auth(scene["key"].full))
        scores = result.as_numpy("score")
        assert scores is not None
        assert scores.tolist() == pytest.approx(expected, rel=1e-6)
        assert result.get_response()["model_name"] == "ranker"
    client.close()


def test_versions_paths_reach_the_replica_with_the_version(gateway: Process, scene: dict[str, Any]) -> None:
    headers = auth(scene["key"].full)
    answer = httpx.post(f"{gateway.url}/v2/models/ranker/versions/1/infer", json=BODY, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_name"] == "ranker"
    metadata = httpx.get(f"{gateway.url}/v2/models/ranker/versions/1", headers=headers, timeout=10)
    assert metadata.status_code == 200 and metadata.json()["name"] == "ranker"
    missing = httpx.post(f"{gateway.url}/v2/models/ranker/versions/7/infer", json=BODY, headers=headers, timeout=10)
    assert missing.status_code == 404
    assert isinstance(missing.json()["error"], str)


def assert_v2_error(response: httpx.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str)
    assert words in body["error"], body["error"]


def test_refusals_are_in_the_v2_shape(gateway: Process, scene: dict[str, Any]) -> None:
    url = gateway.url
    headers = auth(scene["key"].full)
    assert_v2_error(httpx.post(f"{url}/v2/models/nope/infer", json=BODY, headers=headers, timeout=5), 404, "nope")
    bad_key = auth(scene["key"].full[:-4] + "AAAA")
    assert_v2_error(httpx.post(f"{url}/v2/models/ranker/infer", json=BODY, headers=bad_key, timeout=5), 401, "key")
    assert_v2_error(httpx.get(f"{url}/v2/health/live", timeout=5), 401, "")
    # Another tenant's model is a model this key does not have.
    assert_v2_error(httpx.post(f"{url}/v2/models/theirs/infer", json=BODY, headers=headers, timeout=5), 404, "theirs")
    theirs = httpx.post(f"{url}/v2/models/ranker/infer", json=BODY, headers=auth(scene["other_key"].full), timeout=5)
    assert_v2_error(theirs, 404, "ranker")
    assert_v2_error(httpx.get(f"{url}/v2/models/ranker/infer", headers=headers, timeout=5), 405, "GET")
    # A version goes into the upstream path: one that would climb out of it is no version (sent as is, unnormalised).
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=5)
    connection.request("POST", "/v2/models/ranker/versions/../../admin/faults/infer", b"{}", headers)
    climbing = connection.getresponse()
    assert climbing.status == 404 and list(json.loads(climbing.read())) == ["error"]
    connection.close()
    assert_v2_error(httpx.get(f"{url}/v2/elsewhere", headers=headers, timeout=5), 404, "/v2/elsewhere")


def test_a_request_on_the_wrong_protocol_is_refused_and_v1_models_lists_openai_models_only(
    gateway: Process, scene: dict[str, Any]
) -> None:
    headers = auth(scene["key"].full)
    on_chat = httpx.post(f"{gateway.url}/v2/models/chat/infer", json=BODY, headers=headers, timeout=5)
    assert_v2_error(on_chat, 400, "OpenAI")
    assert_v2_error(httpx.get(f"{gateway.url}/v2/models/chat/ready", headers=headers, timeout=5), 400, "OpenAI")
    chat_body = {"model": "ranker", "messages": [{"role": "user", "content": "hi"}]}
    on_ranker = httpx.post(f"{gateway.url}/v1/chat/completions", json=chat_body, headers=headers, timeout=5)
    assert on_ranker.status_code == 400
    assert on_ranker.json()["error"]["code"] == "wrong_protocol"
    assert "/v2/models/ranker/infer" in on_ranker.json()["error"]["message"]
    listed = httpx.get(f"{gateway.url}/v1/models", headers=headers, timeout=5).json()
    assert [m["id"] for m in listed["data"]] == ["chat"]


def test_hostile_bodies_are_refused_before_any_replica(gateway: Process, scene: dict[str, Any]) -> None:
    url = f"{gateway.url}/v2/models/ranker/infer"
    headers = auth(scene["key"].full)

    def post(content: bytes, **extra: str) -> httpx.Response:
        return httpx.post(url, content=content, headers={**headers, **extra}, timeout=5)

    deep = b"[" * 100 + b"]" * 100
    assert_v2_error(post(b'{"inputs": ' + deep + b"}"), 400, "nests deeper")
    assert_v2_error(post(b"{not json"), 400, "JSON")
    assert_v2_error(post(b'{"inputs": []}'), 400, "inputs")
    wrong_type = {"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT65", "data": [1]}]}
    assert_v2_error(httpx.post(url, json=wrong_type, headers=headers, timeout=5), 400, "datatype")
    negative = {"inputs": [{"name": "user_id", "shape": [-1], "datatype": "INT64", "data": [1]}]}
    assert_v2_error(httpx.post(url, json=negative, headers=headers, timeout=5), 400, "shape")
    header = b'{"inputs":[{"name":"user_id","shape":[1],"datatype":"INT64","parameters":{"binary_data_size":8}}]}'
    assert_v2_error(post(header + b"\x00" * 4, **{"inference-header-content-length": str(len(header))}), 400, "8")
    assert_v2_error(post(header, **{"inference-header-content-length": "99999"}), 400, "Inference-Header")
    assert_v2_error(post(header, **{"inference-header-content-length": "-1"}), 400, "Inference-Header")
    # What only the model knows comes back from it as its own v2 400: two inputs of different batch sizes.
    ragged = {
        "inputs": [
            {"name": "user_id", "shape": [2], "datatype": "INT64", "data": [1, 2]},
            {"name": "item_id", "shape": [1], "datatype": "INT64", "data": [3]},
        ]
    }
    ragged_answer = httpx.post(url, json=ragged, headers=headers, timeout=5)
    assert ragged_answer.status_code == 400 and isinstance(ragged_answer.json()["error"], str)


def test_a_success_is_metered_in_the_inferences_it_asked(
    gateway: Process, world: World, redis_client: redis.Redis, prefix: str, ranker: Process
) -> None:
    tenant = world.tenant()
    key = world.key(tenant)
    world.deployment(tenant, "ranker", [ranker.url], model=UPSTREAM_MODEL, protocol="v2")
    world.publish(gateway)
    headers = auth(key.full)
    assert (
        httpx.post(f"{gateway.url}/v2/models/ranker/infer", json=BODY, headers=headers, timeout=10).status_code == 200
    )
    assert httpx.get(f"{gateway.url}/v2/models/ranker", headers=headers, timeout=10).status_code == 200
    refused = {"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64", "data": [1]}]}
    assert (
        httpx.post(f"{gateway.url}/v2/models/ranker/infer", json=refused, headers=headers, timeout=10).status_code
        == 400
    )

    deadline = time.monotonic() + 10
    while len(events := usage_events(redis_client, prefix, key)) < 3:
        assert time.monotonic() < deadline, events
        time.sleep(0.05)
    by_status = sorted((int(e["status"]), int(e["inferences"]), int(e["prompt_tokens"])) for e in events)
    assert by_status == [(200, 0, 0), (200, 3, 0), (400, 0, 0)]
    metrics = httpx.get(gateway.metrics_url + "/metrics", timeout=5).text
    line = f'frontdoor_gateway_units_total{{tenant="{tenant}",deployment="ranker",kind="inference"}} 3'
    assert line in metrics


def test_request_limits_count_v2_requests(gateway: Process, world: World, ranker: Process) -> None:
    tenant = world.tenant()
    key = world.key(tenant, requests_per_minute=2)
    world.deployment(tenant, "ranker", [ranker.url], model=UPSTREAM_MODEL, protocol="v2")
    world.publish(gateway)
    url = f"{gateway.url}/v2/models/ranker/infer"
    statuses = [httpx.post(url, json=BODY, headers=auth(key.full), timeout=10) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert_v2_error(statuses[2], 429, "")
    assert int(statuses[2].headers["retry-after"]) >= 1


def test_concurrency_limits_hold_across_v2_requests(gateway: Process, world: World, session_tmp: Path) -> None:
    slow = start_modelserver(session_tmp, "--protocol", "v2", "--model-name", UPSTREAM_MODEL, "--stall-ms", "1500")
    try:
        tenant = world.tenant()
        key = world.key(tenant)
        world.deployment(tenant, "slow", [slow.url], model=UPSTREAM_MODEL, protocol="v2", max_concurrent=1)
        world.publish(gateway)
        url = f"{gateway.url}/v2/models/slow/infer"
        answers: list[httpx.Response] = []

        def infer() -> None:
            answers.append(httpx.post(url, json=BODY, headers=auth(key.full), timeout=20))

        # Two at once on a replica that takes 1.5 s: they overlap, and the deployment admits one at a time.
        threads = [threading.Thread(target=infer) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        assert sorted(a.status_code for a in answers) == [200, 429], [a.text for a in answers]
        assert_v2_error(next(a for a in answers if a.status_code == 429), 429, "")
    finally:
        stop(slow.proc)


def test_canary_weights_split_v2_traffic_by_revision(
    gateway: Process, world: World, redis_client: redis.Redis, prefix: str, session_tmp: Path
) -> None:
    stable = start_modelserver(session_tmp, "--protocol", "v2", "--model-name", "ranker-a")
    canary = start_modelserver(session_tmp, "--protocol", "v2", "--model-name", "ranker-b")
    try:
        tenant = world.tenant()
        key = world.key(tenant)
        revisions = [
            {"id": 91001, "name": "r1", "weight": 50, "model": "ranker-a", "endpoints": [stable.url]},
            {"id": 91002, "name": "r2", "weight": 50, "model": "ranker-b", "endpoints": [canary.url]},
            {"id": 91003, "name": "r3", "weight": 0, "model": "ranker-c", "endpoints": [stable.url]},
        ]
        world.deployment(tenant, "split", revisions=revisions, model="ranker-a", protocol="v2")
        world.publish(gateway)
        url = f"{gateway.url}/v2/models/split/infer"
        for _ in range(40):
            answer = httpx.post(url, json=BODY, headers=auth(key.full), timeout=10)
            assert answer.status_code == 200, answer.text  # each revision's replica answers to its own model name
            assert answer.json()["model_name"] == "split"
        deadline = time.monotonic() + 10
        while len(events := usage_events(redis_client, prefix, key)) < 40:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        served = {int(e["revision"]) for e in events}
        assert served == {91001, 91002}  # both halves of the split, never the revision at weight 0
    finally:
        stop(stable.proc)
        stop(canary.proc)


@pytest.fixture(scope="module")
def patient_gateway(session_tmp: Path, prefix: str, world: World) -> Iterator[Process]:
    """A gateway that holds for 30 s, so a replica started during the hold is in time on a busy machine."""
    proc = start_gateway(session_tmp, prefix, FRONTDOOR_GATEWAY_COLD_HOLD_S="30")
    yield proc
    stop(proc.proc)


def test_a_v2_request_to_a_deployment_at_zero_is_held_until_a_replica_is_ready(
    patient_gateway: Process, world: World, redis_client: redis.Redis, prefix: str, session_tmp: Path
) -> None:
    gateway = patient_gateway
    tenant = world.tenant()
    key = world.key(tenant)
    doc = world.deployment(tenant, "sleepy", [], model=UPSTREAM_MODEL, protocol="v2", min_replicas=0)
    world.publish(gateway)
    headers = auth(key.full)
    not_ready = httpx.get(f"{gateway.url}/v2/models/sleepy/ready", headers=headers, timeout=5)
    assert_v2_error(not_ready, 503, "starting")

    answers: list[httpx.Response] = []
    url = f"{gateway.url}/v2/models/sleepy/infer"
    thread = threading.Thread(target=lambda: answers.append(httpx.post(url, json=BODY, headers=headers, timeout=40)))
    thread.start()
    deadline = time.monotonic() + 10
    while redis_client.get(wake_key(prefix, doc["id"])) is None:
        assert time.monotonic() < deadline, "no wake signal"
        time.sleep(0.02)
    replica = start_modelserver(session_tmp, "--protocol", "v2", "--model-name", UPSTREAM_MODEL)
    try:
        doc["revisions"][0]["endpoints"] = [replica.url]
        world.publish(gateway)
        thread.join(40)
        assert answers and answers[0].status_code == 200, answers and answers[0].text
        assert len(answers[0].json()["outputs"][0]["data"]) == 3
        assert httpx.get(f"{gateway.url}/v2/models/sleepy/ready", headers=headers, timeout=5).status_code == 200
    finally:
        stop(replica.proc)


def test_a_gateway_without_a_snapshot_answers_v2_with_a_v2_503(tmp_path: Path, redis_client: redis.Redis) -> None:
    empty_prefix = f"{BASE_PREFIX}-v2-{uuid.uuid4().hex[:6]}"
    gw = start_gateway(tmp_path, empty_prefix)
    try:
        for path in ("/v2", "/v2/health/ready", "/v2/models/ranker", "/v2/models/ranker/ready"):
            answer = httpx.get(gw.url + path, timeout=5)
            assert_v2_error(answer, 503, "configuration")
            assert int(answer.headers["retry-after"]) >= 1
        assert_v2_error(httpx.post(gw.url + "/v2/models/ranker/infer", json=BODY, timeout=5), 503, "configuration")
    finally:
        stop(gw.proc)
        clear_prefix(redis_client, empty_prefix)
