"""Every line answered exactly once: through a worker killed with SIGKILL mid-batch, a cancel, and an expiry.

Each test runs a batch of a slow built-in model (150 ms a request, two lines at a time), so it is still running
when the test strikes. Whatever happens, the output and error files together hold every input ``custom_id``
exactly once, and the gateway metered each line once (its usage events name each line's request id once).
"""

from __future__ import annotations

import io
from collections import Counter
from typing import cast

import openai
import pytest

from batches.models import Batch
from controlplane.contracts import usage_events
from controlplane.contracts.redis_names import usage_stream_key
from tests.batches.conftest import BatchPlatform
from tests.support.batches import chat_lines, jsonl, read_jsonl
from tests.support.platform import DEPLOYMENT, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]


def _start(bp: BatchPlatform, count: int) -> str:
    uploaded = bp.client.files.create(
        file=("in.jsonl", io.BytesIO(jsonl(chat_lines(count, DEPLOYMENT)))), purpose="batch"
    )
    return bp.client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    ).id


def _answered_at_least(bp: BatchPlatform, batch_id: str, count: int) -> None:
    def probe() -> bool:
        found = Batch.unscoped_objects.get(public_id=batch_id)
        return found.completed + found.failed >= count

    wait_for(probe, 60, f"{count} lines of {batch_id} answered", bp.logs)


def _ended(bp: BatchPlatform, batch_id: str) -> openai.types.Batch:
    def probe() -> openai.types.Batch | None:
        found = bp.client.batches.retrieve(batch_id)
        return found if found.status in ("completed", "failed", "expired", "cancelled") else None

    return wait_for(probe, 90, f"batch {batch_id} to end", bp.logs)


def _files(bp: BatchPlatform, batch: openai.types.Batch) -> tuple[list[dict], list[dict]]:
    output = read_jsonl(bp.client.files.content(batch.output_file_id).text) if batch.output_file_id else []
    errors = read_jsonl(bp.client.files.content(batch.error_file_id).text) if batch.error_file_id else []
    return output, errors


def _metered(bp: BatchPlatform, batch_id: str) -> Counter[str]:
    """How many usage events the gateway wrote per request id of this batch."""
    entries = cast(list, bp.platform.redis.xrange(usage_stream_key(bp.platform.prefix)))
    rid, batch = usage_events.RID.encode(), usage_events.BATCH.encode()
    return Counter(fields[rid].decode() for _id, fields in entries if fields.get(batch) == batch_id.encode())


def _every_line_once(output: list[dict], errors: list[dict], count: int) -> None:
    seen = Counter(line["custom_id"] for line in [*output, *errors])
    assert set(seen) == {f"req-{n}" for n in range(count)}
    assert set(seen.values()) == {1}, [cid for cid, n in seen.items() if n > 1]
    assert len({line["id"] for line in [*output, *errors]}) == count


def test_a_worker_killed_mid_batch_and_every_line_still_answered_once(batch_platform: BatchPlatform) -> None:
    bp = batch_platform
    batch_id = _start(bp, 40)
    _answered_at_least(bp, batch_id, 6)
    bp.batch_workers[0].kill()
    assert Batch.unscoped_objects.get(public_id=batch_id).status == "in_progress"
    bp.start_batch_worker()  # the tick sends a new run once the dead one's marker lapses; its claims lapse too

    done = _ended(bp, batch_id)
    assert done.status == "completed", done
    assert done.request_counts is not None and done.request_counts.completed == 40
    output, errors = _files(bp, done)
    assert errors == []
    _every_line_once(output, errors, 40)
    metered = _metered(bp, batch_id)
    assert set(metered) == {line["id"] for line in output}
    assert set(metered.values()) == {1}


def test_cancel_keeps_the_finished_lines_and_reports_the_rest(batch_platform: BatchPlatform) -> None:
    bp = batch_platform
    batch_id = _start(bp, 100)
    _answered_at_least(bp, batch_id, 4)
    cancelling = bp.client.batches.cancel(batch_id)
    assert cancelling.status == "cancelling"

    done = _ended(bp, batch_id)
    assert done.status == "cancelled" and done.cancelled_at is not None
    output, errors = _files(bp, done)
    _every_line_once(output, errors, 100)
    assert len(output) >= 4 and done.request_counts is not None and len(output) == done.request_counts.completed
    unrun = [e for e in errors if e["response"] is None]
    assert unrun and {e["error"]["code"] for e in unrun} == {"batch_cancelled"}
    assert all(o["response"]["status_code"] == 200 for o in output)
    with pytest.raises(openai.ConflictError):
        bp.client.batches.cancel(batch_id)


@pytest.mark.batch_env({"FRONTDOOR_BATCH_WINDOW_S": "4"})
def test_expiry_keeps_the_finished_lines_and_reports_the_rest(batch_platform: BatchPlatform) -> None:
    bp = batch_platform
    batch_id = _start(bp, 100)

    done = _ended(bp, batch_id)
    assert done.status == "expired" and done.expired_at is not None
    output, errors = _files(bp, done)
    _every_line_once(output, errors, 100)
    assert output, "some lines finished within the window"
    expired = [e for e in errors if e["response"] is None]
    assert expired and {e["error"]["code"] for e in expired} == {"batch_expired"}
