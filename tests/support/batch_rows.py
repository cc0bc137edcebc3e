"""Batch API rows made directly for the REST, console and browser tests: files with stored content, batches.

The storage must point at the test's own folder first (``tests.support.batches.reset_batch_storage``).
"""

from __future__ import annotations

import io
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from tests.support.batches import chat_lines, jsonl

if TYPE_CHECKING:
    from batches.models import Batch, BatchFile
    from tenants.models import Tenant


def request_lines(count: int) -> bytes:
    """A batch input of ``count`` chat completion requests."""
    return jsonl(chat_lines(count, "chat"))


def store_file(
    tenant: Tenant, content: bytes, *, purpose: str = "batch", filename: str = "requests.jsonl", **fields: Any
) -> BatchFile:
    """A file row of ``tenant`` with ``content`` stored under its name, as an upload or a finished batch leaves it."""
    from batches import storage
    from batches.models import BatchFile, new_file_id

    public_id = new_file_id()
    name = storage.save(storage.file_name(tenant.pk, public_id), io.BytesIO(content))
    return BatchFile.unscoped_objects.create(
        public_id=public_id,
        tenant=tenant,
        purpose=purpose,
        filename=filename,
        bytes=len(content),
        lines=content.count(b"\n"),
        urls={"/v1/chat/completions": 1} if purpose == "batch" else {},
        storage_name=name,
        expires_at=timezone.now() + timedelta(days=30),
        **fields,
    )


def make_batch(tenant: Tenant, input_file: BatchFile | None = None, **fields: Any) -> Batch:
    """A batch of ``tenant`` running ``input_file``: in progress with nothing answered, unless ``fields`` say."""
    from batches.models import Batch

    now = timezone.now()
    defaults: dict[str, Any] = {
        "status": Batch.Status.IN_PROGRESS,
        "endpoint": "/v1/chat/completions",
        "total": input_file.lines if input_file is not None else 0,
        "in_progress_at": now,
        "expires_at": now + timedelta(hours=24),
    }
    return Batch.unscoped_objects.create(
        tenant=tenant,
        input_file=input_file,
        input_file_public_id=input_file.public_id if input_file is not None else "file-gone",
        **(defaults | fields),
    )
