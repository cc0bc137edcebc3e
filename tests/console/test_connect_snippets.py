"""The Connect panel's snippets work as copied: each one, rendered for a real gateway, gets an answer from the model.

A real model server (chat, and the v2 ranker) behind a real gateway process on 127.0.0.1; the snippets run as a
user would run them: curl in a shell, the Python ones in a fresh interpreter, the JavaScript one in Node. With no
key in the panel they read it from ``FRONTDOOR_API_KEY``; with one, it is written in.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.template.loader import render_to_string
from django.test import RequestFactory

from tests.support.gateway import (
    BASE_PREFIX,
    REDIS_URL,
    Key,
    Process,
    World,
    clear_prefix,
    start_gateway,
    start_modelserver,
    stop,
)

V2_BODY = (
    '{"inputs": [{"name": "user_id", "shape": [2], "datatype": "INT64", "data": [1, 2]}, '
    '{"name": "item_id", "shape": [2], "datatype": "INT64", "data": [10, 20]}]}'
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, Key]]:
    """A gateway serving ``chat`` (OpenAI) and ``ranker`` (v2) to one tenant, and that tenant's key."""
    tmp = tmp_path_factory.mktemp("connect")
    client = redis.Redis.from_url(REDIS_URL)
    prefix = f"{BASE_PREFIX}-{uuid.uuid4().hex[:6]}"
    chat = start_modelserver(tmp)
    ranker = start_modelserver(tmp, "--protocol", "v2", "--model-name", "frontdoor/ranker")
    gateway = start_gateway(tmp, prefix)
    try:
        world = World(client, prefix)
        tenant = world.tenant()
        world.deployment(tenant, "chat", [chat.url], image_generation=True)
        world.deployment(tenant, "ranker", [ranker.url], model="frontdoor/ranker", protocol="v2")
        key = world.key(tenant)
        world.publish(gateway)
        yield gateway, key
    finally:
        for process in (gateway, ranker, chat):
            stop(process.proc)
        clear_prefix(client, prefix)
        client.close()


def snippets(settings: Any, gateway: Process, **context: Any) -> dict[str, str]:
    settings.FRONTDOOR_GATEWAY_URL = gateway.url
    page = render_to_string("includes/connect.html", context, request=RequestFactory().get("/"))
    found = re.findall(r'<pre class="code" id="connect-(\w+)-code"><code>(.*?)</code></pre>', page, re.S)
    return {name: html.unescape(text) for name, text in found}


def run(command: list[str], key: Key, tmp_path: Path) -> str:
    environment = {**os.environ, "FRONTDOOR_API_KEY": key.full, "NO_PROXY": "127.0.0.1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path, env=environment)
    assert done.returncode == 0, done.stderr
    return done.stdout


def in_shell(snippet: str, key: Key, tmp_path: Path) -> str:
    if shutil.which("curl") is None:
        pytest.skip("curl is missing")
    return run(["bash", "-c", snippet + " -sS --fail-with-body"], key, tmp_path)


def in_python(snippet: str, key: Key, tmp_path: Path) -> str:
    return run([sys.executable, "-c", snippet], key, tmp_path)


def in_node(snippet: str, key: Key, tmp_path: Path) -> str:
    if shutil.which("node") is None:
        pytest.skip("node is missing")
    return run(["node", "--input-type=module", "-e", snippet], key, tmp_path)


@pytest.mark.parametrize("with_key", [False, True], ids=["key from the environment", "key filled in"])
def test_the_openai_snippets_get_a_chat_answer(
    served: tuple[Process, Key], settings: Any, tmp_path: Path, with_key: bool
) -> None:
    gateway, key = served
    code = snippets(settings, gateway, model="chat", protocol="openai", api_key=key.full if with_key else "")

    answer = json.loads(in_shell(code["curl"], key, tmp_path))
    assert answer["model"] == "chat" and answer["choices"][0]["message"]["content"]
    assert in_python(code["python"], key, tmp_path).strip()
    assert in_node(code["js"], key, tmp_path).strip()


def test_the_images_snippet_gets_a_png(served: tuple[Process, Key], settings: Any, tmp_path: Path) -> None:
    gateway, key = served
    code = snippets(settings, gateway, model="chat", protocol="openai", api_key="", images=True)

    answer = json.loads(in_shell(code["images"], key, tmp_path))
    assert base64.b64decode(answer["data"][0]["b64_json"]).startswith(b"\x89PNG")


def test_the_v2_snippets_get_the_rankers_scores(served: tuple[Process, Key], settings: Any, tmp_path: Path) -> None:
    gateway, key = served
    code = snippets(settings, gateway, model="ranker", protocol="v2", api_key="", v2_body=V2_BODY)

    answer = json.loads(in_shell(code["curl"], key, tmp_path))
    assert answer["model_name"] == "ranker" and answer["outputs"][0]["name"] == "score"
    scores = answer["outputs"][0]["data"]
    printed = in_python(code["python"], key, tmp_path)  # tritonclient prints the numpy array of scores
    assert printed.startswith("[") and len(printed.strip("[] \n").split()) == len(scores) == 2
    node = in_node(code["js"], key, tmp_path)
    assert "score" in node and "FP32" in node


def test_a_snippet_with_a_wrong_key_gets_the_gateways_refusal(
    served: tuple[Process, Key], settings: Any, tmp_path: Path
) -> None:
    gateway, _ = served
    code = snippets(settings, gateway, model="chat", protocol="openai", api_key="fd_live_abcd1234_" + "A" * 40)

    environment = {**os.environ, "NO_PROXY": "127.0.0.1"}
    done = subprocess.run(
        ["bash", "-c", code["curl"] + " -sS"], capture_output=True, text=True, timeout=30, env=environment
    )
    assert json.loads(done.stdout)["error"]["code"] == "invalid_api_key"
