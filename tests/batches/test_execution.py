"""The claim/record protocol on its own: two runs never both answer a line, whatever the order of their steps.

These call ``batches.execution`` directly against Postgres, with answers made here instead of sent to a gateway
(the end-to-end tests send them for real), so each interleaving is set up exactly.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest
from django.utils import timezone

from batches import execution, services
from batches.line_client import Answer, Verdict, classify
from batches.models import Batch, BatchLine
from tenants.models import Tenant
from tests.support.batches import read_jsonl, upload

pytestmark = pytest.mark.django_db


def _batch(tenant: Tenant, count: int) -> Batch:
    source = upload(tenant, count)
    batch = services.create_batch(
        tenant,
        actor=None,
        request_id="r",
        input_file_id=source.public_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata=None,
    )
    execution.prepare(batch.pk)
    execution.prepare(batch.pk)  # a second run finds it started and copies nothing again
    batch.refresh_from_db()
    assert batch.status == "in_progress" and batch.lines.count() == count
    return batch


def _ok(n: int = 0) -> Answer:
    body = orjson.dumps({"object": "chat.completion", "n": n, "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
    return Answer(Verdict.FINAL, 200, body)


def _lapse(batch: Batch) -> None:
    BatchLine.unscoped_objects.filter(batch=batch).update(claimed_until=timezone.now() - timedelta(seconds=1))


def test_a_lapsed_claim_taken_over_records_nothing_and_the_holder_records_once(acme: Tenant) -> None:
    batch = _batch(acme, 3)
    first = execution.claim_lines(batch.pk, "aaaa", 10)
    assert [line.index for line in first] == [1, 2, 3]
    assert execution.claim_lines(batch.pk, "bbbb", 10) == []  # held: nobody else gets them
    _lapse(batch)
    second = execution.claim_lines(batch.pk, "bbbb", 10)
    assert [line.public_id for line in second] == [line.public_id for line in first]  # the same request ids
    execution.record(batch.pk, "aaaa", first, [_ok(1)] * 3)  # the old holder is too late
    batch.refresh_from_db()
    assert (batch.completed, batch.failed) == (0, 0)
    execution.record(batch.pk, "bbbb", second, [_ok(2)] * 3)
    execution.record(batch.pk, "bbbb", second, [_ok(3)] * 3)  # recorded already: nothing twice
    batch.refresh_from_db()
    assert (batch.completed, batch.prompt_tokens, batch.completion_tokens) == (3, 9, 6)
    assert {orjson.loads(line.answer)["n"] for line in batch.lines.all()} == {2}


def test_throttles_wait_without_counting_and_failures_end_after_the_attempts(acme: Tenant, settings: Any) -> None:
    settings.FRONTDOOR_BATCH_LINE_ATTEMPTS = 2
    batch = _batch(acme, 2)
    lines = execution.claim_lines(batch.pk, "c1", 10)
    throttled = Answer(Verdict.THROTTLED, 429, b'{"error": {"code": "rate_limit_exceeded"}}', 0.1)
    failing = Answer(Verdict.TRANSIENT, 502, b'{"error": {"code": "upstream_unavailable"}}', 0.1)
    execution.record(batch.pk, "c1", lines, [throttled, failing])
    rows = {row.index: row for row in batch.lines.all()}
    assert (rows[1].state, rows[1].attempts, rows[2].state, rows[2].attempts) == ("queued", 0, "queued", 1)
    assert rows[2].not_before is not None and rows[2].not_before > timezone.now()
    BatchLine.unscoped_objects.filter(batch=batch).update(not_before=None)
    again = execution.claim_lines(batch.pk, "c2", 10)
    execution.record(batch.pk, "c2", again, [_ok(), failing])  # line 2's second failure is its last
    batch.refresh_from_db()
    assert (batch.completed, batch.failed) == (1, 1)
    assert not execution.claim_lines(batch.pk, "c3", 10)

    assert execution.begin_ending(batch.pk, Batch.Ending.COMPLETED)
    assert execution.finalize(batch.pk)
    batch.refresh_from_db()
    assert batch.status == "completed" and not batch.lines.exists()
    errors = read_jsonl(b"".join(_content(batch.error_file.storage_name)).decode())
    assert [(e["custom_id"], e["response"]["status_code"]) for e in errors] == [("req-1", 502)]


def _content(name: str) -> list[bytes]:
    from batches import storage

    return list(storage.read_chunks(name))


def test_finalize_waits_for_live_claims_and_a_late_answer_changes_nothing(acme: Tenant) -> None:
    batch = _batch(acme, 4)
    held = execution.claim_lines(batch.pk, "live", 2)
    services.cancel_batch(acme, batch.public_id, actor=None, request_id="r")
    assert execution.finalize(batch.pk) is False  # two lines are still being answered
    execution.record(batch.pk, "live", held, [_ok(), _ok()])  # answers during cancelling still count
    assert execution.finalize(batch.pk) is True
    execution.record(batch.pk, "live", held, [_ok(), _ok()])  # after the end: nothing changes
    batch.refresh_from_db()
    assert (batch.status, batch.completed, batch.failed, batch.total) == ("cancelled", 2, 0, 4)
    output = read_jsonl(b"".join(_content(batch.output_file.storage_name)).decode())
    errors = read_jsonl(b"".join(_content(batch.error_file.storage_name)).decode())
    assert [o["custom_id"] for o in output] == ["req-0", "req-1"]
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [
        ("req-2", "batch_cancelled"),
        ("req-3", "batch_cancelled"),
    ]


def test_a_refused_key_stops_the_batch(acme: Tenant) -> None:
    batch = _batch(acme, 3)
    lines = execution.claim_lines(batch.pk, "c", 10)
    revoked = classify(
        401, b'{"error": {"code": "invalid_api_key", "message": "This API key has been revoked."}}', None
    )
    assert revoked.verdict == Verdict.STOP
    execution.record(batch.pk, "c", lines, [_ok(), revoked, revoked])
    batch.refresh_from_db()
    assert batch.status == "finalizing" and batch.ending == "failed"
    assert batch.errors[0]["code"] == "invalid_api_key" and "revoked" in batch.errors[0]["message"]
    assert execution.finalize(batch.pk)
    batch.refresh_from_db()
    assert batch.status == "failed" and batch.completed == 1


@pytest.mark.parametrize(
    ("status", "code", "verdict"),
    [
        (200, "", Verdict.FINAL),
        (400, "invalid_request_error", Verdict.FINAL),
        (404, "model_not_found", Verdict.FINAL),
        (429, "insufficient_quota", Verdict.FINAL),
        (503, "deployment_stopped", Verdict.FINAL),
        (429, "rate_limit_exceeded", Verdict.THROTTLED),
        (429, "concurrency_limit_exceeded", Verdict.THROTTLED),
        (409, "batch_line_in_progress", Verdict.THROTTLED),
        (503, "snapshot_unavailable", Verdict.TRANSIENT),
        (502, "upstream_unavailable", Verdict.TRANSIENT),
        (403, "tenant_suspended", Verdict.STOP),
    ],
)
def test_answers_are_classified_once(status: int, code: str, verdict: Verdict) -> None:
    body = orjson.dumps({"error": {"code": code, "message": "m"}}) if code else b"{}"
    assert classify(status, body, "2").verdict == verdict
