"""Errors in OpenAI's shape, over raw HTTP."""

from __future__ import annotations

import pytest

from tests.support.modelserver import RunningServer


def assert_openai_error(body: dict[str, object], code: str) -> dict[str, object]:
    error = body["error"]
    assert isinstance(error, dict)
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    return error


def test_it_refuses_invalid_json_with_400(modelserver: RunningServer) -> None:
    answer = modelserver.request("POST", "/v1/chat/completions", b'{"model": "m", "messages": [')
    assert answer.status == 400
    assert answer.headers["content-type"] == "application/json"
    error = assert_openai_error(answer.json(), "invalid_json")
    assert error["param"] is None
    assert error["type"] == "invalid_request_error"


def test_it_refuses_a_body_that_is_not_an_object(modelserver: RunningServer) -> None:
    answer = modelserver.request("POST", "/v1/completions", b"[1, 2]")
    assert answer.status == 400
    assert_openai_error(answer.json(), "invalid_request")


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"model": "m"}, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ("/v1/completions", {"model": "m"}, "prompt"),
        ("/v1/embeddings", {"model": "m"}, "input"),
    ],
)
def test_it_names_a_missing_field(modelserver: RunningServer, path: str, body: dict[str, object], param: str) -> None:
    answer = modelserver.request("POST", path, body)
    assert answer.status == 400
    error = assert_openai_error(answer.json(), "missing_required_parameter")
    assert error["param"] == param


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "messages": [], "max_tokens": 3}, "messages"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "messages": [{"content": "no role"}]}, "messages[0]"),
    ],
)
def test_it_names_an_invalid_field(modelserver: RunningServer, body: dict[str, object], param: str) -> None:
    answer = modelserver.request("POST", "/v1/chat/completions", body)
    assert answer.status == 400
    assert assert_openai_error(answer.json(), "invalid_value")["param"] == param


def test_it_answers_unknown_paths_with_404(modelserver: RunningServer) -> None:
    answer = modelserver.request("GET", "/v2/nothing-here")
    assert answer.status == 404
    assert_openai_error(answer.json(), "unknown_url")


def test_it_answers_a_wrong_method_with_405(modelserver: RunningServer) -> None:
    answer = modelserver.request("GET", "/v1/chat/completions")
    assert answer.status == 405
    assert_openai_error(answer.json(), "method_not_allowed")


def test_it_counts_refused_requests_by_status(modelserver: RunningServer) -> None:
    before = modelserver.metrics().get('modelserver_requests_total{endpoint="embeddings",status="400"}', 0.0)
    modelserver.request("POST", "/v1/embeddings", {"model": "m", "input": 3})
    after = modelserver.metrics()['modelserver_requests_total{endpoint="embeddings",status="400"}']
    assert after == before + 1
