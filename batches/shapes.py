"""Files and batches as OpenAI's API shows them (the objects the official ``openai`` client parses)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from batches.models import Batch, BatchFile


def _ts(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def file_object(found: BatchFile) -> dict[str, Any]:
    return {
        "id": found.public_id,
        "object": "file",
        "bytes": found.bytes,
        "created_at": _ts(found.created_at),
        "expires_at": _ts(found.expires_at),
        "filename": found.filename,
        "purpose": found.purpose,
        "status": "processed",
        "status_details": None,
    }


def batch_object(batch: Batch) -> dict[str, Any]:
    output = batch.output_file.public_id if batch.output_file_id and batch.output_file else None
    errors = batch.error_file.public_id if batch.error_file_id and batch.error_file else None
    return {
        "id": batch.public_id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
        "input_file_id": batch.input_file_public_id,
        "completion_window": batch.completion_window,
        "status": batch.status,
        "output_file_id": output,
        "error_file_id": errors,
        "created_at": _ts(batch.created_at),
        "in_progress_at": _ts(batch.in_progress_at),
        "expires_at": _ts(batch.expires_at),
        "finalizing_at": _ts(batch.finalizing_at),
        "completed_at": _ts(batch.completed_at),
        "failed_at": _ts(batch.failed_at),
        "expired_at": _ts(batch.expired_at),
        "cancelling_at": _ts(batch.cancelling_at),
        "cancelled_at": _ts(batch.cancelled_at),
        "request_counts": {"total": batch.total, "completed": batch.completed, "failed": batch.failed},
        "metadata": batch.metadata,
        "usage": {
            "input_tokens": batch.prompt_tokens,
            "output_tokens": batch.completion_tokens,
            "total_tokens": batch.prompt_tokens + batch.completion_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }


def page(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }
