"""/v1/chat/completions through the official openai client, whole and streamed."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.support.modelserver import RunningServer


def ask(server: RunningServer, content: str, **kwargs: Any) -> Any:
    return server.client().chat.completions.create(
        model=kwargs.pop("model", "frontdoor/sim-chat"),
        messages=[{"role": "user", "content": content}],
        **kwargs,
    )


def test_it_answers_with_the_openai_shape_and_echoes_the_model(modelserver: RunningServer) -> None:
    reply = ask(modelserver, "Tell me about rivers.", model="acme/anything-goes")
    assert reply.object == "chat.completion"
    assert reply.model == "acme/anything-goes"
    assert reply.id.startswith("chatcmpl-")
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content


def test_it_counts_prompt_tokens_as_words_and_punctuation(modelserver: RunningServer) -> None:
    reply = ask(modelserver, "Hello, world!")
    # "Hello" "," "world" "!" per the documented tokenizer.
    assert reply.usage.prompt_tokens == 4
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_it_generates_one_word_per_completion_token(modelserver: RunningServer) -> None:
    reply = ask(modelserver, "Describe a mountain", max_tokens=7)
    words = reply.choices[0].message.content.split(" ")
    assert all(re.fullmatch(r"[a-z]+", word) for word in words)
    assert len(words) == reply.usage.completion_tokens == 7
    assert reply.choices[0].finish_reason == "length"


def test_it_defaults_max_tokens_to_sixteen(modelserver: RunningServer) -> None:
    reply = ask(modelserver, "no limit given")
    assert reply.usage.completion_tokens <= 16


def test_it_stops_by_itself_when_max_tokens_is_generous(modelserver: RunningServer) -> None:
    reply = ask(modelserver, "A long budget", max_tokens=500)
    assert reply.choices[0].finish_reason == "stop"
    assert len(reply.choices[0].message.content.split()) == reply.usage.completion_tokens < 500


def test_it_is_deterministic_per_prompt(modelserver: RunningServer) -> None:
    first = ask(modelserver, "same prompt", max_tokens=12).choices[0].message.content
    again = ask(modelserver, "same prompt", max_tokens=12).choices[0].message.content
    other = ask(modelserver, "another prompt", max_tokens=12).choices[0].message.content
    assert first == again
    assert first != other


def test_it_accepts_max_completion_tokens_and_several_choices(modelserver: RunningServer) -> None:
    reply = ask(modelserver, "pick two", max_completion_tokens=5, n=2)
    assert [c.index for c in reply.choices] == [0, 1]
    assert all(len(c.message.content.split()) == 5 for c in reply.choices)
    assert reply.usage.completion_tokens == 10


def test_it_streams_chunks_whose_deltas_add_up_to_the_whole_answer(modelserver: RunningServer) -> None:
    whole = ask(modelserver, "stream me", max_tokens=9).choices[0].message.content
    chunks = list(ask(modelserver, "stream me", max_tokens=9, stream=True))
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text == whole
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(chunk.usage is None for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1


def test_it_ends_a_stream_with_a_usage_chunk_when_asked(modelserver: RunningServer) -> None:
    chunks = list(ask(modelserver, "count, please", max_tokens=6, stream=True, stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == []
    assert last.usage.prompt_tokens == 3
    assert last.usage.completion_tokens == 6
    assert all(chunk.usage is None for chunk in chunks[:-1])


@pytest.mark.parametrize("content", ["", "   "])
def test_it_answers_empty_prompts_with_zero_prompt_tokens(modelserver: RunningServer, content: str) -> None:
    reply = ask(modelserver, content, max_tokens=3)
    assert reply.usage.prompt_tokens == 0
    assert reply.usage.completion_tokens == 3


def test_it_reads_text_parts_of_multipart_messages(modelserver: RunningServer) -> None:
    reply = modelserver.client().chat.completions.create(
        model="m",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "two words"}]},
        ],
        max_tokens=2,
    )
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 5  # "Be" "brief" "." "two" "words"
