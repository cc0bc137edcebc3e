"""/v1/completions through the official openai client."""

from __future__ import annotations

from tests.support.modelserver import RunningServer


def test_it_completes_a_prompt_with_usage(modelserver: RunningServer) -> None:
    reply = modelserver.client().completions.create(model="legacy", prompt="Once upon a time", max_tokens=5)
    assert reply.object == "text_completion"
    assert reply.usage is not None
    assert reply.model == "legacy"
    assert len(reply.choices[0].text.split()) == reply.usage.completion_tokens == 5
    assert reply.usage.prompt_tokens == 4


def test_it_answers_each_prompt_of_a_batch_in_order(modelserver: RunningServer) -> None:
    client = modelserver.client()
    batch = client.completions.create(model="m", prompt=["first prompt", "second prompt"], max_tokens=4)
    single = client.completions.create(model="m", prompt="second prompt", max_tokens=4)
    assert [c.index for c in batch.choices] == [0, 1]
    assert batch.usage is not None
    assert batch.choices[1].text == single.choices[0].text
    assert batch.usage.prompt_tokens == 4


def test_it_counts_token_array_prompts_by_length(modelserver: RunningServer) -> None:
    reply = modelserver.client().completions.create(model="m", prompt=[101, 2023, 2003, 102], max_tokens=2)
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 4


def test_it_streams_text_chunks_with_usage(modelserver: RunningServer) -> None:
    client = modelserver.client()
    whole = client.completions.create(model="m", prompt="stream this", max_tokens=6).choices[0].text
    chunks = list(
        client.completions.create(
            model="m", prompt="stream this", max_tokens=6, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6
