"""Image generation through the gateway: the official ``openai`` client's ``images.generate`` against the built-in
model server, PNGs decoded by an independent reader, routed only to deployments that declare it, metered per image.
"""

from __future__ import annotations

import base64
import io
import time
from typing import Any

import httpx2 as httpx
import openai
import pytest
import redis
from PIL import Image

from tests.support.gateway import Process, World, usage_events


@pytest.fixture(scope="module")
def scene(world: World, gateway: Process, upstream: Process) -> dict[str, Any]:
    tenant = world.tenant()
    world.deployment(tenant, "painter", [upstream.url], image_generation=True)
    world.deployment(tenant, "chat", [upstream.url])
    scene = {"tenant": tenant, "key": world.key(tenant)}
    world.publish(gateway)
    return scene


def client(gateway: Process, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)


def decoded(b64: str | None) -> Image.Image:
    assert b64 is not None
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert image.format == "PNG"
    return image


def test_images_generate_returns_pngs_of_the_asked_size(gateway: Process, scene: dict[str, Any]) -> None:
    api = client(gateway, scene["key"].full)
    answer = api.images.generate(
        model="painter", prompt="a lighthouse at dusk", size="256x128", n=2, response_format="b64_json"
    )
    assert answer.data is not None and len(answer.data) == 2
    images = [decoded(item.b64_json) for item in answer.data]
    assert all(image.size == (256, 128) for image in images)
    again = api.images.generate(
        model="painter", prompt="a lighthouse at dusk", size="256x128", response_format="b64_json"
    )
    other = api.images.generate(
        model="painter", prompt="a forest in the rain", size="256x128", response_format="b64_json"
    )
    assert again.data and other.data
    assert again.data[0].b64_json == answer.data[0].b64_json  # the same prompt draws the same picture
    assert other.data[0].b64_json != answer.data[0].b64_json
    assert decoded(other.data[0].b64_json).tobytes() != images[0].tobytes()


def test_images_are_metered_per_image(
    gateway: Process, world: World, upstream: Process, redis_client: redis.Redis, prefix: str
) -> None:
    tenant = world.tenant()
    key = world.key(tenant)
    world.deployment(tenant, "painter", [upstream.url], image_generation=True)
    world.publish(gateway)
    client(gateway, key.full).images.generate(model="painter", prompt="three owls", size="64x64", n=3)
    deadline = time.monotonic() + 10
    while not (events := usage_events(redis_client, prefix, key)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    [event] = events
    assert (event["status"], event["images"], event["inferences"]) == ("200", "3", "0")
    metrics = httpx.get(gateway.metrics_url + "/metrics", timeout=5).text
    assert f'frontdoor_gateway_units_total{{tenant="{tenant}",deployment="painter",kind="image"}} 3' in metrics


def test_image_requests_are_checked_and_routed_to_declaring_deployments_only(
    gateway: Process, scene: dict[str, Any]
) -> None:
    url = gateway.url + "/v1/images/generations"
    headers = {"authorization": f"Bearer {scene['key'].full}"}

    def refusal(body: dict[str, Any]) -> dict[str, Any]:
        answer = httpx.post(url, json=body, headers=headers, timeout=10)
        assert answer.status_code == 400, answer.text
        error: dict[str, Any] = answer.json()["error"]
        return error

    assert refusal({"model": "chat", "prompt": "x"})["code"] == "model_not_supported"
    assert refusal({"model": "painter"})["param"] == "prompt"
    assert refusal({"model": "painter", "prompt": "x", "response_format": "url"})["param"] == "response_format"
    for size in ("big", "0x10", "10x99999", "²x2", "10x10x10"):
        assert refusal({"model": "painter", "prompt": "x", "size": size})["param"] == "size"
    assert refusal({"model": "painter", "prompt": "x", "n": 0})["param"] == "n"
    assert refusal({"model": "painter", "prompt": "x", "n": 1000})["param"] == "n"
    assert refusal({"model": "painter", "prompt": "   "})["param"] == "prompt"
    missing = httpx.post(url, json={"model": "nope", "prompt": "x"}, headers=headers, timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
