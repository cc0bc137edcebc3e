"""Every change to a tenant's batch files and batches, for the gateway's internal routes, the REST API and the console.

Uploads are checked line by line (``batches.jsonl``) as they are read from the request's spooled copy, then stored;
a refused file leaves nothing behind. A batch is admitted against the tenant's quota (open batches, queued lines)
under the quota's row lock, so two creations cannot both take the last place. Its lines are copied in by a task
(``batches.tasks.prepare``) and run by the workers (``batches.execution``).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import IO, Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from batches import storage
from batches.jsonl import Limits, LineError, read_lines
from batches.models import (
    FILENAME_MAX_LENGTH,
    METADATA_KEY_MAX_LENGTH,
    METADATA_MAX_KEYS,
    METADATA_VALUE_MAX_LENGTH,
    Batch,
    BatchFile,
    new_file_id,
)
from controlplane.access import Principal
from controlplane.audit import record_audit
from controlplane.contracts.batch_wire import BATCH_ENDPOINTS
from controlplane.domain_errors import Conflict, Invalid, NotFound, QuotaExceeded
from quotas.models import Quota
from tenants.models import ApiKey, Tenant

log = logging.getLogger("frontdoor.batches")

COMPLETION_WINDOWS = ("24h",)


class FileTooLarge(Invalid):
    code = "file_too_large"


def file_limits() -> Limits:
    return Limits(settings.FRONTDOOR_BATCH_MAX_LINES, settings.FRONTDOOR_BATCH_MAX_LINE_BYTES)


def upload_file(
    tenant: Tenant,
    *,
    actor: Principal | None,
    request_id: str,
    filename: str,
    purpose: str,
    content: IO[bytes],
    size: int,
) -> BatchFile:
    """Check and store an uploaded batch input; ``Invalid`` (with the line number) refuses it and stores nothing."""
    if purpose != BatchFile.Purpose.BATCH:
        raise Invalid({"purpose": [f"only purpose 'batch' is accepted here, not {purpose!r}"]})
    if size > settings.FRONTDOOR_BATCH_MAX_FILE_BYTES:
        raise FileTooLarge({"file": [f"the file is larger than {settings.FRONTDOOR_BATCH_MAX_FILE_BYTES} bytes"]})
    clean_name = _clean_filename(filename)
    urls: dict[str, int] = {}
    lines = 0
    try:
        for line in read_lines(storage.chunks_of(content), file_limits()):
            lines += 1
            urls.setdefault(line.url, line.number)
    except LineError as exc:
        raise Invalid({"file": [str(exc)]}) from None
    content.seek(0)
    public_id = new_file_id()
    name = storage.save(storage.file_name(tenant.pk, public_id), content)
    try:
        with transaction.atomic():
            created = BatchFile.unscoped_objects.create(
                public_id=public_id,
                tenant=tenant,
                api_key=actor.api_key if actor else None,
                purpose=BatchFile.Purpose.BATCH,
                filename=clean_name,
                bytes=size,
                lines=lines,
                urls=urls,
                storage_name=name,
                expires_at=timezone.now() + timedelta(seconds=settings.FRONTDOOR_BATCH_FILE_RETENTION_S),
            )
            record_audit(
                actor, tenant, "batch_file.create", created, {"bytes": size, "lines": lines}, request_id=request_id
            )
    except BaseException:
        storage.delete(name)  # no content without its row
        raise
    return created


def _clean_filename(filename: str) -> str:
    """The client's name for the file, as a label only: the last path part, printable, bounded."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    printable = "".join(ch for ch in base if ch.isprintable()).strip()
    return (printable or "upload.jsonl")[:FILENAME_MAX_LENGTH]


def get_file(tenant: Tenant, public_id: str) -> BatchFile:
    found = BatchFile.objects.for_tenant(tenant).filter(public_id=public_id).first()
    if found is None:
        raise NotFound(f"no file {public_id!r}")
    return found


def delete_file(tenant: Tenant, public_id: str, *, actor: Principal | None, request_id: str) -> BatchFile:
    """Delete a file and its content. Refused (409) while a batch that has not read it yet still needs it."""
    with transaction.atomic():
        found = BatchFile.objects.for_tenant(tenant).select_for_update().filter(public_id=public_id).first()
        if found is None:
            raise NotFound(f"no file {public_id!r}")
        if Batch.objects.for_tenant(tenant).filter(input_file=found, status=Batch.Status.VALIDATING).exists():
            raise Conflict("a batch is still reading this file; delete it once the batch is in progress")
        record_audit(actor, tenant, "batch_file.delete", found, request_id=request_id)
        found.delete()
        transaction.on_commit(lambda: storage.delete(found.storage_name))
    return found


def create_batch(
    tenant: Tenant,
    *,
    actor: Principal | None,
    request_id: str,
    input_file_id: Any,
    endpoint: Any,
    completion_window: Any,
    metadata: Any,
) -> Batch:
    """Admit a batch of ``input_file_id``'s lines against the tenant's quota; it starts as ``validating``."""
    problems: dict[str, list[str]] = {}
    if not isinstance(endpoint, str) or endpoint not in BATCH_ENDPOINTS:
        problems["endpoint"] = [f"must be one of {', '.join(BATCH_ENDPOINTS)}"]
    if completion_window not in COMPLETION_WINDOWS:
        problems["completion_window"] = ["must be '24h'"]
    if (metadata_problem := _metadata_problem(metadata)) is not None:
        problems["metadata"] = [metadata_problem]
    if not isinstance(input_file_id, str) or not input_file_id:
        problems["input_file_id"] = ["must name an uploaded file"]
    if problems:
        raise Invalid(problems)
    source = BatchFile.objects.for_tenant(tenant).filter(public_id=input_file_id).first()
    if source is None:
        raise Invalid({"input_file_id": [f"no file {input_file_id!r}"]})
    if source.purpose != BatchFile.Purpose.BATCH:
        raise Invalid({"input_file_id": ["the file's purpose is not 'batch'"]})
    if stray := sorted((number, url) for url, number in source.urls.items() if url != endpoint):
        number, url = stray[0]
        raise Invalid({"input_file_id": [f"line {number}: url {url!r} differs from the batch's endpoint {endpoint!r}"]})
    with transaction.atomic():
        quota = Quota.objects.for_tenant(tenant).select_for_update().first()
        open_batches = Batch.objects.for_tenant(tenant).filter(status__in=Batch.OPEN)
        if quota is not None:
            if open_batches.count() >= quota.max_open_batches:
                raise QuotaExceeded(
                    f"the tenant has {quota.max_open_batches} open batches, its quota; wait for one to end"
                )
            queued = open_batches.aggregate(n=Sum(F("total") - F("completed") - F("failed")))["n"] or 0
            if queued + source.lines > quota.max_batch_queued_lines:
                raise QuotaExceeded(
                    f"{source.lines} more lines would take the tenant's queued batch lines past its quota of "
                    f"{quota.max_batch_queued_lines} ({queued} queued now)"
                )
        batch = Batch.unscoped_objects.create(
            tenant=tenant,
            api_key=actor.api_key if actor else None,
            input_file=source,
            input_file_public_id=source.public_id,
            endpoint=endpoint,
            completion_window=completion_window,
            metadata=metadata,
            total=source.lines,
            expires_at=timezone.now() + timedelta(seconds=settings.FRONTDOOR_BATCH_WINDOW_S),
        )
        record_audit(
            actor, tenant, "batch.create", batch, {"lines": source.lines, "endpoint": endpoint}, request_id=request_id
        )
        from batches.tasks import enqueue_prepare

        transaction.on_commit(lambda: enqueue_prepare(batch.pk))
    return batch


def _metadata_problem(metadata: Any) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        return "must be an object of string keys and values"
    if len(metadata) > METADATA_MAX_KEYS:
        return f"at most {METADATA_MAX_KEYS} pairs"
    for key, value in metadata.items():
        if not isinstance(value, str) or len(key) > METADATA_KEY_MAX_LENGTH or len(value) > METADATA_VALUE_MAX_LENGTH:
            return f"keys up to {METADATA_KEY_MAX_LENGTH} characters, string values up to {METADATA_VALUE_MAX_LENGTH}"
        if "\x00" in key or "\x00" in value:
            return "must not contain NUL characters"
    return None


def get_batch(tenant: Tenant, public_id: str) -> Batch:
    found = Batch.objects.for_tenant(tenant).filter(public_id=public_id).first()
    if found is None:
        raise NotFound(f"no batch {public_id!r}")
    return found


def cancel_batch(tenant: Tenant, public_id: str, *, actor: Principal | None, request_id: str) -> Batch:
    """Ask a batch to stop: ``cancelling`` until the lines in flight are answered, then ``cancelled``.

    Lines answered before the cancel stay in its output; the rest are reported as cancelled. Cancelling a batch
    that already ended is a 409; cancelling one that is cancelling changes nothing.
    """
    with transaction.atomic():
        batch = Batch.objects.for_tenant(tenant).select_for_update().filter(public_id=public_id).first()
        if batch is None:
            raise NotFound(f"no batch {public_id!r}")
        if batch.status == Batch.Status.CANCELLING:
            return batch
        if batch.status not in (Batch.Status.VALIDATING, Batch.Status.IN_PROGRESS):
            raise Conflict(f"the batch is {batch.status}; only a validating or running batch can be cancelled")
        batch.status = Batch.Status.CANCELLING
        batch.ending = Batch.Ending.CANCELLED
        batch.cancelling_at = timezone.now()
        batch.save(update_fields=["status", "ending", "cancelling_at"])
        record_audit(actor, tenant, "batch.cancel", batch, request_id=request_id)
        from batches.tasks import enqueue_run

        transaction.on_commit(lambda: enqueue_run(batch.pk))
    return batch


def key_of(tenant: Tenant, key_id: str) -> ApiKey | None:
    """The tenant's key with public id ``key_id`` (the gateway names the key it authenticated)."""
    return ApiKey.objects.for_tenant(tenant).filter(key_id=key_id).first()
