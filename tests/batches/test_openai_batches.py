"""Acceptance: the official ``openai`` client's Batch API calls against the whole platform.

The gateway forwards files and batches to the live server's internal routes; a real batch worker sends each line
back through the gateway to a built-in model on the local backend. Output lines match the input's ``custom_id``s one
to one; a line for a model the tenant does not have goes to the error file in OpenAI's shape.
"""

from __future__ import annotations

import io

import openai
import pytest

from batches.models import Batch, BatchLine
from tests.batches.conftest import BatchPlatform
from tests.support.batches import chat_lines, jsonl, read_jsonl
from tests.support.platform import DEPLOYMENT, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


def _ended(bp: BatchPlatform, batch_id: str, timeout_s: float = 60) -> openai.types.Batch:
    def probe() -> openai.types.Batch | None:
        found = bp.client.batches.retrieve(batch_id)
        return found if found.status in ("completed", "failed", "expired", "cancelled") else None

    return wait_for(probe, timeout_s, f"batch {batch_id} to end", bp.logs)


def test_files_and_batches_through_the_official_client(batch_platform: BatchPlatform) -> None:
    bp = batch_platform
    lines = chat_lines(6, DEPLOYMENT)
    lines.append({**chat_lines(1, "no-such-model", "ghost")[0]})
    uploaded = bp.client.files.create(file=("in.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == len(jsonl(lines))
    assert bp.client.files.retrieve(uploaded.id).filename == "in.jsonl"
    assert uploaded.id in [f.id for f in bp.client.files.list()]

    batch = bp.client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"job": "e2e"}
    )
    assert batch.status in ("validating", "in_progress") and batch.metadata == {"job": "e2e"}
    assert batch.id in [b.id for b in bp.client.batches.list(limit=5)]

    done = _ended(bp, batch.id)
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (7, 6, 1)
    assert done.output_file_id and done.error_file_id

    output = read_jsonl(bp.client.files.content(done.output_file_id).text)
    assert sorted(o["custom_id"] for o in output) == sorted(f"req-{n}" for n in range(6))
    for entry in output:
        assert entry["id"].startswith("batch_req_") and entry["error"] is None
        assert entry["response"]["status_code"] == 200
        assert entry["response"]["body"]["object"] == "chat.completion"
        assert entry["response"]["request_id"] == entry["id"]
    errors = read_jsonl(bp.client.files.content(done.error_file_id).text)
    assert [e["custom_id"] for e in errors] == ["ghost-0"]
    assert errors[0]["response"]["status_code"] == 404
    assert errors[0]["response"]["body"]["error"]["code"] == "model_not_found"
    # The lines are gone once their answers are in the files; the usage counts tokens of the answered ones.
    assert not BatchLine.unscoped_objects.filter(batch__public_id=batch.id).exists()
    assert Batch.unscoped_objects.get(public_id=batch.id).completion_tokens > 0

    # Another tenant's key sees none of it.
    for call in (
        lambda: bp.other.files.retrieve(uploaded.id),
        lambda: bp.other.files.content(uploaded.id),
        lambda: bp.other.batches.retrieve(batch.id),
        lambda: bp.other.batches.cancel(batch.id),
        lambda: bp.other.files.delete(uploaded.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert bp.other.batches.list().data == []

    # A file is deleted with its content.
    assert bp.client.files.delete(uploaded.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        bp.client.files.content(uploaded.id)


def test_a_malformed_file_is_refused_with_its_line_number(batch_platform: BatchPlatform) -> None:
    bp = batch_platform
    good = jsonl(chat_lines(2, DEPLOYMENT))
    with pytest.raises(openai.BadRequestError) as refused:
        bp.client.files.create(
            file=("bad.jsonl", io.BytesIO(good + b'{"custom_id": "x", "method": "GET"}\n')), purpose="batch"
        )
    assert "line 3" in str(refused.value) and "missing field" in str(refused.value)
    with pytest.raises(openai.BadRequestError) as duplicate:
        bp.client.files.create(file=("dup.jsonl", io.BytesIO(good + good)), purpose="batch")
    assert "line 3" in str(duplicate.value) and "more than once" in str(duplicate.value)
    assert bp.client.files.list().data == []  # nothing stored
    assert not list((bp.tmp / "files").rglob("*.jsonl"))

    # A batch whose endpoint differs from its lines' url is refused at once, naming the line.
    uploaded = bp.client.files.create(file=("ok.jsonl", io.BytesIO(good)), purpose="batch")
    with pytest.raises(openai.BadRequestError) as mismatch:
        bp.client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
    assert "line 1" in str(mismatch.value)
    with pytest.raises(openai.BadRequestError):
        bp.client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="1h")  # type: ignore[arg-type]
    assert not Batch.unscoped_objects.exists()
