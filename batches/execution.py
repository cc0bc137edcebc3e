"""Running a batch: its lines copied in, claimed in chunks, sent to the gateway, answered exactly once.

Every step is a conditional write, so a task may run twice and a worker may die anywhere:

- **prepare** (``validating`` -> ``in_progress``) copies the input file's lines into ``BatchLine`` rows in one
  transaction under the batch's row lock; a second run finds the batch no longer validating and does nothing.
- **claim**: ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)`` takes lines that are queued (and due) or
  whose claim has lapsed, stamping them with this run's claim token and a deadline. Two runs never hold one line.
- **send**: each line goes to the gateway with the same request id on every try; the gateway answers a request id
  at most once (a re-run gets the stored answer back), so a line re-sent after a crash is neither executed,
  reserved nor metered twice.
- **record**: ``UPDATE ... WHERE id = ? AND claim = <this run's token> AND state = 'claimed'`` under the batch's row
  lock, with the counters in the same transaction. A run whose claim lapsed and was taken over records nothing;
  the run that holds it records the answer once.
- **finalize** waits until no claim is live, then, under the batch's row lock, writes the output and error files
  from the lines, creates their rows, sets the final status and deletes the lines, in one transaction. Run twice,
  it writes the same names again; after it, a late ``record`` finds the batch ended and changes nothing.
"""

from __future__ import annotations

import logging
import secrets
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from batches import storage
from batches.jsonl import LineError, read_lines
from batches.line_client import Answer, LineClient, Verdict
from batches.models import Batch, BatchFile, BatchLine
from batches.services import file_limits

log = logging.getLogger("frontdoor.batches.execution")

INSERT_CHUNK = 2000
BACKOFF_CAP_S = 60.0
# A line the batch gate refused is tried again this often, by the thread that holds it, for up to CAPACITY_WAIT_S:
# capacity frees as requests finish, far sooner than a Retry-After's whole second.
CAPACITY_POLL_S = 0.05
CAPACITY_WAIT_S = 5.0
# Why a line that never ran has no answer, by the way its batch ended (the error file's ``error.code``).
UNANSWERED = {
    Batch.Ending.EXPIRED: ("batch_expired", "This request could not be executed before the completion window expired."),
    Batch.Ending.CANCELLED: ("batch_cancelled", "This request was not executed: the batch was cancelled."),
    Batch.Ending.FAILED: ("batch_failed", "This request was not executed: the batch failed."),
    Batch.Ending.COMPLETED: ("batch_failed", "This request was not executed."),
}
TERMINAL = {
    Batch.Ending.COMPLETED: (Batch.Status.COMPLETED, "completed_at"),
    Batch.Ending.EXPIRED: (Batch.Status.EXPIRED, "expired_at"),
    Batch.Ending.CANCELLED: (Batch.Status.CANCELLED, "cancelled_at"),
    Batch.Ending.FAILED: (Batch.Status.FAILED, "failed_at"),
}


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    index: int
    public_id: str
    body: str
    attempts: int


# --- prepare ---------------------------------------------------------------------------------------------------


def prepare(batch_id: int) -> None:
    """Copy a validating batch's input lines in and start it; a batch past validating is left alone."""
    with transaction.atomic():
        batch = Batch.unscoped_objects.select_for_update().filter(pk=batch_id).first()
        if batch is None or batch.status != Batch.Status.VALIDATING:
            return
        source = batch.input_file
        failure: dict[str, Any] | None = None
        if source is None or not storage.exists(source.storage_name):
            failure = {"code": "file_not_found", "message": "the input file was deleted before the batch read it"}
        else:
            try:
                count = _copy_lines(batch, source)
            except LineError as exc:
                failure = {"code": "invalid_line", "message": exc.reason, "line": exc.line, "param": None}
        now = timezone.now()
        if failure is not None:
            batch.errors = [failure]
            batch.status, batch.ending, batch.failed_at = Batch.Status.FAILED, Batch.Ending.FAILED, now
            batch.save(update_fields=["errors", "status", "ending", "failed_at"])
            return
        batch.total = count
        batch.status, batch.in_progress_at = Batch.Status.IN_PROGRESS, now
        batch.save(update_fields=["total", "status", "in_progress_at"])


def _copy_lines(batch: Batch, source: BatchFile) -> int:
    rows: list[BatchLine] = []
    count = 0
    for line in read_lines(storage.read_chunks(source.storage_name), file_limits()):
        if line.url != batch.endpoint:
            raise LineError(line.number, f"url {line.url!r} differs from the batch's endpoint {batch.endpoint!r}")
        rows.append(BatchLine(batch=batch, index=line.number, custom_id=line.custom_id, body=line.body.decode()))
        count += 1
        if len(rows) >= INSERT_CHUNK:
            BatchLine.unscoped_objects.bulk_create(rows)
            rows = []
    BatchLine.unscoped_objects.bulk_create(rows)
    return count


# --- run -------------------------------------------------------------------------------------------------------


def run(batch_id: int, budget_s: float | None = None) -> bool:
    """Work on a batch for up to ``budget_s`` seconds; True when work is left for another run."""
    deadline = time.monotonic() + (settings.FRONTDOOR_BATCH_TASK_SECONDS if budget_s is None else budget_s)
    client = LineClient(
        settings.FRONTDOOR_GATEWAY_URL, settings.FRONTDOOR_INTERNAL_TOKEN, settings.FRONTDOOR_BATCH_LINE_TIMEOUT_S
    )
    concurrency = max(1, settings.FRONTDOOR_BATCH_CONCURRENCY)
    chunk_s = 0.0  # how long the last chunk took: one that would end well past the deadline is left to the next run
    with ThreadPoolExecutor(concurrency, thread_name_prefix="batch-line") as pool:
        try:
            while time.monotonic() + chunk_s / 2 < deadline:
                batch = Batch.unscoped_objects.filter(pk=batch_id).select_related("api_key").first()
                if batch is None or not batch.is_open or batch.status == Batch.Status.VALIDATING:
                    return False
                if batch.status == Batch.Status.IN_PROGRESS and timezone.now() >= batch.expires_at:
                    begin_ending(batch_id, Batch.Ending.EXPIRED)
                    continue
                if batch.status != Batch.Status.IN_PROGRESS:  # cancelling or finalizing
                    if finalize(batch_id):
                        return False
                    time.sleep(0.5)
                    continue
                claim = secrets.token_hex(8)
                lines = claim_lines(batch_id, claim, concurrency)
                if lines:
                    started = time.monotonic()
                    key_id = batch.api_key.key_id if batch.api_key is not None else ""
                    send = partial(_send, client, batch, key_id, min(deadline, started + CAPACITY_WAIT_S))
                    answers = list(pool.map(send, lines))
                    record(batch_id, claim, lines, answers)
                    chunk_s = time.monotonic() - started
                    continue
                if not _lines_left(batch_id):
                    begin_ending(batch_id, Batch.Ending.COMPLETED)
                    continue
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))  # lines waiting to be due, or claimed
        finally:
            client.close()
    return True


def _send(client: LineClient, batch: Batch, key_id: str, wait_until: float, line: Claimed) -> Answer:
    """One line's answer; while the batch gate holds it back, it looks again every ``CAPACITY_POLL_S`` (bounded)."""
    body = line.body.encode()
    while True:
        answer = client.send(batch.endpoint, body, request_id=line.public_id, batch_id=batch.public_id, key_id=key_id)
        if not answer.no_spare_capacity or time.monotonic() + CAPACITY_POLL_S >= wait_until:
            return answer
        time.sleep(CAPACITY_POLL_S)


def claim_lines(batch_id: int, claim: str, limit: int) -> list[Claimed]:
    """Take up to ``limit`` lines that are due (queued and past their backoff, or claimed but lapsed)."""
    table = BatchLine._meta.db_table
    lease = timedelta(seconds=settings.FRONTDOOR_BATCH_CLAIM_S)
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {table} SET state = 'claimed', claim = %s, claimed_until = %s, attempts = attempts + 1
            WHERE id IN (
                SELECT id FROM {table}
                WHERE batch_id = %s AND (
                    (state = 'queued' AND (not_before IS NULL OR not_before <= %s))
                    OR (state = 'claimed' AND claimed_until < %s)
                )
                ORDER BY index LIMIT %s FOR UPDATE SKIP LOCKED
            )
            RETURNING id, index, public_id, body, attempts
            """,  # noqa: S608 - the table name is the model's, every value a parameter
            [claim, now + lease, batch_id, now, now, limit],
        )
        rows = cursor.fetchall()
    return sorted((Claimed(*row) for row in rows), key=lambda line: line.index)


def _lines_left(batch_id: int) -> bool:
    return BatchLine.unscoped_objects.filter(batch_id=batch_id).exclude(state=BatchLine.State.DONE).exists()


def record(batch_id: int, claim: str, lines: list[Claimed], answers: list[Answer]) -> None:
    """Write the answers of lines this run still holds, once; requeue the ones worth another try."""
    max_attempts = settings.FRONTDOOR_BATCH_LINE_ATTEMPTS
    now = timezone.now()
    with transaction.atomic():
        batch = Batch.unscoped_objects.select_for_update().filter(pk=batch_id).first()
        if batch is None or batch.status not in (Batch.Status.IN_PROGRESS, Batch.Status.CANCELLING):
            return  # ended meanwhile: what was written at the end stands
        held = BatchLine.unscoped_objects.filter(batch_id=batch_id, claim=claim, state=BatchLine.State.CLAIMED)
        completed = failed = prompt = completion = 0
        stop: Answer | None = None
        for line, answer in zip(lines, answers, strict=True):
            verdict = answer.verdict
            if verdict == Verdict.TRANSIENT and line.attempts >= max_attempts:
                verdict = Verdict.FINAL  # out of tries: the last answer (or the lack of one) is the line's
            if verdict == Verdict.STOP:
                stop = stop or answer
                verdict = Verdict.THROTTLED
            if verdict == Verdict.FINAL:
                status = answer.status
                body = answer.body.decode("utf-8", "replace") if status is not None else _no_answer(answer)
                done = held.filter(pk=line.id).update(
                    state=BatchLine.State.DONE, status_code=status, answer=body, claim="", claimed_until=None
                )
                if not done:
                    continue
                if status is not None and 200 <= status < 300:
                    completed += 1
                    p, c = _tokens(answer.body)
                    prompt, completion = prompt + p, completion + c
                else:
                    failed += 1
            else:
                delay = answer.retry_after_s
                fields: dict[str, Any] = {"state": BatchLine.State.QUEUED, "claim": "", "claimed_until": None}
                if verdict == Verdict.THROTTLED:
                    fields["attempts"] = max(line.attempts - 1, 0)  # waiting for a limit is not a failed try
                else:
                    delay = max(delay, min(2.0 ** (line.attempts - 1), BACKOFF_CAP_S))
                fields["not_before"] = now + timedelta(seconds=delay)
                held.filter(pk=line.id).update(**fields)
        if completed or failed or prompt or completion:
            Batch.unscoped_objects.filter(pk=batch_id).update(
                completed=batch.completed + completed,
                failed=batch.failed + failed,
                prompt_tokens=batch.prompt_tokens + prompt,
                completion_tokens=batch.completion_tokens + completion,
            )
        if stop is not None and batch.status == Batch.Status.IN_PROGRESS:
            _end(batch, Batch.Ending.FAILED, [_stop_error(stop)])


def _no_answer(answer: Answer) -> str:
    return orjson.dumps({"error": answer.error or "no answer from the gateway"}).decode()


def _tokens(body: bytes) -> tuple[int, int]:
    try:
        usage = orjson.loads(body).get("usage") or {}
        prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    except (orjson.JSONDecodeError, AttributeError):
        return 0, 0
    valid = isinstance(prompt, int) and isinstance(completion, int) and prompt >= 0 and completion >= 0
    return (prompt, completion) if valid else (0, 0)


def _stop_error(answer: Answer) -> dict[str, Any]:
    try:
        error = orjson.loads(answer.body).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        error = {}
    code = error.get("code") if isinstance(error.get("code"), str) else "unauthorized"
    message = error.get("message") if isinstance(error.get("message"), str) else "the batch's API key was refused"
    return {"code": code, "message": f"The batch stopped: {message}", "param": None, "line": None}


def begin_ending(batch_id: int, ending: str) -> bool:
    """Stop a running batch from claiming more lines: it goes to ``finalizing`` with where it will end."""
    with transaction.atomic():
        batch = Batch.unscoped_objects.select_for_update().filter(pk=batch_id).first()
        if batch is None or batch.status != Batch.Status.IN_PROGRESS:
            return False
        _end(batch, ending)
    return True


def _end(batch: Batch, ending: str, errors: list[dict[str, Any]] | None = None) -> None:
    batch.status, batch.ending, batch.finalizing_at = Batch.Status.FINALIZING, ending, timezone.now()
    fields = ["status", "ending", "finalizing_at"]
    if errors:
        batch.errors = [*batch.errors, *errors]
        fields.append("errors")
    batch.save(update_fields=fields)


# --- finalize --------------------------------------------------------------------------------------------------


def finalize(batch_id: int) -> bool:
    """Write a stopping batch's files and end it; False while a claim is live (its answers are still coming)."""
    now = timezone.now()
    with transaction.atomic():
        batch = Batch.unscoped_objects.select_for_update().filter(pk=batch_id).first()
        if batch is None or batch.status not in (Batch.Status.FINALIZING, Batch.Status.CANCELLING):
            return batch is None or not batch.is_open
        live = BatchLine.unscoped_objects.filter(
            batch_id=batch_id, state=BatchLine.State.CLAIMED, claimed_until__gt=now
        )
        if live.exists():
            return False
        ending = batch.ending or Batch.Ending.COMPLETED
        output, errors = _write_files(batch, ending)
        status, stamp = TERMINAL[Batch.Ending(ending)]
        batch.output_file, batch.error_file = output, errors
        batch.status = status
        setattr(batch, stamp, timezone.now())
        if batch.finalizing_at is None:
            batch.finalizing_at = now
        batch.save(update_fields=["output_file", "error_file", "status", stamp, "finalizing_at"])
        BatchLine.unscoped_objects.filter(batch_id=batch_id).delete()
    return True


def _write_files(batch: Batch, ending: str) -> tuple[BatchFile | None, BatchFile | None]:
    code, message = UNANSWERED[Batch.Ending(ending)]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        counts = {"out": 0, "err": 0}
        for line in _lines_in_order(batch.pk):
            if line.status_code is not None:
                entry: dict[str, Any] = {
                    "id": line.public_id,
                    "custom_id": line.custom_id,
                    "response": {
                        "status_code": line.status_code,
                        "request_id": line.public_id,
                        "body": _json_or_text(line.answer),
                    },
                    "error": None,
                }
                target = "out" if 200 <= line.status_code < 300 else "err"
            else:
                done = line.state == BatchLine.State.DONE  # ran out of tries without an HTTP answer
                error = _json_or_text(line.answer).get("error") if done else None
                entry = {
                    "id": line.public_id,
                    "custom_id": line.custom_id,
                    "response": None,
                    "error": {"code": "gateway_unreachable", "message": str(error)}
                    if done
                    else {"code": code, "message": message},
                }
                target = "err"
            (out if target == "out" else err).write(orjson.dumps(entry) + b"\n")
            counts[target] += 1
        output = _store(batch, "output", out, counts["out"])
        errors = _store(batch, "error", err, counts["err"])
    return output, errors


def _lines_in_order(batch_id: int) -> Iterator[BatchLine]:
    return BatchLine.unscoped_objects.filter(batch_id=batch_id).order_by("index").iterator(chunk_size=2000)


def _json_or_text(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"error": text}


def _store(batch: Batch, kind: str, content: Any, lines: int) -> BatchFile | None:
    if lines == 0:
        return None
    size = content.tell()
    content.seek(0)
    name = f"tenants/{batch.tenant_id}/batches/{batch.public_id}/{kind}.jsonl"
    stored = storage.save(name, content)
    retention = timedelta(seconds=settings.FRONTDOOR_BATCH_FILE_RETENTION_S)
    return BatchFile.unscoped_objects.create(
        tenant_id=batch.tenant_id,
        api_key_id=batch.api_key_id,
        purpose=BatchFile.Purpose.OUTPUT,
        filename=f"{batch.public_id}_{kind}.jsonl",
        bytes=size,
        lines=lines,
        storage_name=stored,
        expires_at=timezone.now() + retention,
    )
