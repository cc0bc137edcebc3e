"""/v1/embeddings with the simulator model."""

from __future__ import annotations

import math

from tests.support.modelserver import RunningServer


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (norm(a) * norm(b))


def test_it_returns_deterministic_unit_vectors_of_the_default_dimension(modelserver: RunningServer) -> None:
    client = modelserver.client()
    first = client.embeddings.create(model="frontdoor/sim-embed", input="a sentence to embed")
    again = client.embeddings.create(model="frontdoor/sim-embed", input="a sentence to embed")
    vector = first.data[0].embedding
    assert len(vector) == 384
    assert math.isclose(norm(vector), 1.0, rel_tol=1e-5)
    assert vector == again.data[0].embedding
    assert first.model == "frontdoor/sim-embed"
    assert first.usage.prompt_tokens == first.usage.total_tokens == 4


def test_it_embeds_a_batch_in_order_and_like_single_requests(modelserver: RunningServer) -> None:
    client = modelserver.client()
    texts = ["alpha beta", "gamma", "delta epsilon zeta"]
    batch = client.embeddings.create(model="e", input=texts, encoding_format="float")
    assert [item.index for item in batch.data] == [0, 1, 2]
    for text, item in zip(texts, batch.data, strict=True):
        single = client.embeddings.create(model="e", input=text, encoding_format="float").data[0].embedding
        assert item.embedding == single
    assert batch.usage.prompt_tokens == 6


def test_it_serves_base64_the_same_vectors_as_floats(modelserver: RunningServer) -> None:
    client = modelserver.client()
    floats = client.embeddings.create(model="e", input="encoded", encoding_format="float").data[0].embedding
    # The client asks for base64 by default and decodes it to float32.
    decoded = client.embeddings.create(model="e", input="encoded").data[0].embedding
    assert len(decoded) == len(floats)
    assert all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7) for a, b in zip(decoded, floats, strict=True))


def test_it_accepts_token_arrays(modelserver: RunningServer) -> None:
    reply = modelserver.client().embeddings.create(model="e", input=[[1, 2, 3], [4, 5]], encoding_format="float")
    assert len(reply.data) == 2
    assert reply.usage.prompt_tokens == 5


def test_it_shortens_vectors_to_the_requested_dimensions(modelserver: RunningServer) -> None:
    reply = modelserver.client().embeddings.create(model="e", input="short", dimensions=8, encoding_format="float")
    assert len(reply.data[0].embedding) == 8
    assert math.isclose(norm(reply.data[0].embedding), 1.0, rel_tol=1e-5)


def test_it_places_texts_sharing_words_closer_than_unrelated_ones(modelserver: RunningServer) -> None:
    texts = ["the cat sat on the mat", "the cat sat on a mat", "quantum chromodynamics lattice"]
    vectors = [d.embedding for d in modelserver.client().embeddings.create(model="e", input=texts).data]
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])


def test_it_serves_a_configured_dimension(make_modelserver) -> None:  # type: ignore[no-untyped-def]
    server = make_modelserver("--embedding-dim", "16", "--embeddings-model-name", "acme/embed")
    reply = server.client().embeddings.create(model="acme/embed", input="x", encoding_format="float")
    assert len(reply.data[0].embedding) == 16
    assert "acme/embed" in [m.id for m in server.client().models.list()]
