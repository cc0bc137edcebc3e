"""/v1/models and /health."""

from __future__ import annotations

from tests.support.modelserver import RunningServer


def test_it_lists_the_chat_and_embeddings_models(modelserver: RunningServer) -> None:
    models = modelserver.client().models.list()
    assert [m.id for m in models] == ["frontdoor/sim-chat", "frontdoor/sim-embed"]
    assert all(m.object == "model" and m.owned_by == "frontdoor" for m in models)


def test_it_retrieves_any_model_name(modelserver: RunningServer) -> None:
    model = modelserver.client().models.retrieve("acme/chat-small")
    assert model.id == "acme/chat-small"


def test_it_lists_a_configured_model_name(make_modelserver) -> None:  # type: ignore[no-untyped-def]
    server = make_modelserver("--served-model-name", "acme/llama")
    assert server.client().models.list().data[0].id == "acme/llama"


def test_it_reports_healthy_when_ready(modelserver: RunningServer) -> None:
    answer = modelserver.request("GET", "/health")
    assert answer.status == 200
    assert answer.json() == {"status": "ok"}
