"""/v1/images/generations: real PNGs of the asked size, deterministic per prompt and index, OpenAI's shape."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import openai
import pytest
from PIL import Image

from tests.support.modelserver import MakeServer, RunningServer

PATH = "/v1/images/generations"


def decode(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def generate(server: RunningServer, **body: object) -> list[dict[str, str]]:
    answer = server.request("POST", PATH, body)
    assert answer.status == 200, answer.body
    data: list[dict[str, str]] = answer.json()["data"]
    return data


def test_it_answers_in_openais_shape_with_a_png_of_the_default_size(modelserver: RunningServer) -> None:
    started = int(time.time())
    answer = modelserver.request("POST", PATH, {"model": "frontdoor/sim-image", "prompt": "a red fox"})
    assert answer.status == 200
    body = answer.json()
    assert set(body) == {"created", "data"} and body["created"] >= started
    (item,) = body["data"]
    assert set(item) == {"b64_json", "revised_prompt"} and item["revised_prompt"] == "a red fox"
    image = decode(item["b64_json"])
    assert (image.format, image.size, image.mode) == ("PNG", (1024, 1024), "RGB")


@pytest.mark.parametrize(("size", "expected"), [("16x16", (16, 16)), ("640x48", (640, 48)), ("auto", (1024, 1024))])
def test_it_draws_exactly_the_asked_size(modelserver: RunningServer, size: str, expected: tuple[int, int]) -> None:
    (item,) = generate(modelserver, prompt="a lighthouse", size=size)
    assert decode(item["b64_json"]).size == expected


def test_it_works_with_the_official_client(modelserver: RunningServer) -> None:
    result = modelserver.client().images.generate(model="m", prompt="a teapot", n=2, size="256x256")
    assert result.data is not None and len(result.data) == 2
    assert all(decode(image.b64_json or "").size == (256, 256) for image in result.data)


def test_it_gives_the_same_bytes_for_the_same_prompt_and_index(modelserver: RunningServer) -> None:
    first = generate(modelserver, prompt="a blue bicycle", n=2, size="64x64")
    again = generate(modelserver, prompt="a blue bicycle", n=2, size="64x64")
    assert [item["b64_json"] for item in first] == [item["b64_json"] for item in again]
    assert first[0]["b64_json"] != first[1]["b64_json"]  # n pictures of one prompt are not copies


def test_it_draws_different_pictures_for_different_prompts(modelserver: RunningServer) -> None:
    (cat,) = generate(modelserver, prompt="a cat", size="128x96")
    (dog,) = generate(modelserver, prompt="a dog", size="128x96")
    cat_pixels = np.asarray(decode(cat["b64_json"]), dtype=np.int16)
    dog_pixels = np.asarray(decode(dog["b64_json"]), dtype=np.int16)
    assert np.abs(cat_pixels - dog_pixels).mean() > 10  # clearly different pictures, not a few changed bytes
    assert len(np.unique(cat_pixels.reshape(-1, 3), axis=0)) > 50  # a picture, not a flat colour


def assert_refused(server: RunningServer, body: dict[str, object], param: str, code: str = "invalid_value") -> None:
    answer = server.request("POST", PATH, body)
    assert answer.status == 400, answer.body
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": "x" * 4001}, "prompt"),
        ({"prompt": "x", "n": 0}, "n"),
        ({"prompt": "x", "n": 11}, "n"),
        ({"prompt": "x", "n": True}, "n"),
        ({"prompt": "x", "n": 1.5}, "n"),
        ({"prompt": "x", "size": "15x64"}, "size"),
        ({"prompt": "x", "size": "64x2049"}, "size"),
        ({"prompt": "x", "size": "big"}, "size"),
        ({"prompt": "x", "size": "\u0661\u0660\u0662\u0664x\u0661\u0660\u0662\u0664"}, "size"),  # Arabic digits
        ({"prompt": "x", "size": 1024}, "size"),
        ({"prompt": "x", "n": 5, "size": "2048x2048"}, "n"),
        ({"prompt": "x", "response_format": "url"}, "response_format"),
        ({"prompt": "x", "response_format": "jpeg"}, "response_format"),
        ({"prompt": "x", "model": ""}, "model"),
    ],
)
def test_it_refuses_bad_fields(modelserver: RunningServer, body: dict[str, object], param: str) -> None:
    assert_refused(modelserver, body, param)


def test_it_names_a_missing_prompt(modelserver: RunningServer) -> None:
    assert_refused(modelserver, {"model": "m"}, "prompt", "missing_required_parameter")


def test_it_explains_that_urls_are_not_kept(modelserver: RunningServer) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        modelserver.client().images.generate(model="m", prompt="x", response_format="url")
    assert "keeps no files" in str(caught.value)


def test_it_counts_image_requests_by_status(modelserver: RunningServer) -> None:
    ok, bad = (
        'modelserver_requests_total{endpoint="images",status="200"}',
        ('modelserver_requests_total{endpoint="images",status="400"}'),
    )
    before = modelserver.metrics()
    generate(modelserver, prompt="a kite", size="32x32")
    modelserver.request("POST", PATH, {"prompt": "a kite", "n": 99})
    after = modelserver.metrics()
    assert after[ok] == before.get(ok, 0) + 1
    assert after[bad] == before.get(bad, 0) + 1


def test_it_fails_in_openais_shape_when_an_error_is_injected(make_modelserver: MakeServer) -> None:
    server = make_modelserver("--error-rate", "1")
    answer = server.request("POST", PATH, {"prompt": "a kite", "size": "32x32"})
    assert answer.status == 500
    assert answer.json()["error"]["code"] == "simulated_error"
    assert server.metric("modelserver_injected_errors_total") == 1
