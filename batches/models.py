"""The Batch API's rows: a tenant's files, its batches, and each batch's lines while it runs.

A file's content lives in the batch storage (``batches.storage``), named by the file's id; the row says whose it
is, what it holds and until when. A batch copies its input's lines into ``BatchLine`` rows when it starts, so the
workers claim and answer them with conditional UPDATEs (``batches.execution``); when it ends, the answers go into its
output and error files and the lines are deleted.
"""

from __future__ import annotations

import secrets

from django.db import models

from controlplane.scoping import TenantScopedManager
from tenants.models import ApiKey, Tenant

CUSTOM_ID_MAX_LENGTH = 512
FILENAME_MAX_LENGTH = 255
METADATA_MAX_KEYS = 16  # as OpenAI: up to 16 pairs, keys up to 64 characters, values up to 512
METADATA_KEY_MAX_LENGTH = 64
METADATA_VALUE_MAX_LENGTH = 512


def new_file_id() -> str:
    return f"file-{secrets.token_hex(12)}"


def new_batch_id() -> str:
    return f"batch_{secrets.token_hex(12)}"


def new_line_id() -> str:
    return f"batch_req_{secrets.token_hex(12)}"


class BatchFile(models.Model):
    class Purpose(models.TextChoices):
        BATCH = "batch"  # uploaded: a batch's input
        OUTPUT = "batch_output"  # written by a batch: its output or error file

    public_id = models.CharField(max_length=40, unique=True, default=new_file_id, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="batch_files")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    filename = models.CharField(max_length=FILENAME_MAX_LENGTH)
    bytes = models.PositiveBigIntegerField(default=0)
    lines = models.PositiveIntegerField(default=0)
    # The first line naming each route ({url: line number}): a batch whose endpoint differs is refused at once.
    urls = models.JSONField(default=dict, blank=True)
    storage_name = models.CharField(max_length=255, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    unscoped_objects = models.Manager()
    objects: TenantScopedManager[BatchFile] = TenantScopedManager()  # type: ignore[assignment]  # django-stubs types managers as Self

    class Meta:
        default_manager_name = "unscoped_objects"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="batchfile_tenant_created")]

    def __str__(self) -> str:
        return self.public_id


class Batch(models.Model):
    class Status(models.TextChoices):
        VALIDATING = "validating"
        IN_PROGRESS = "in_progress"
        FINALIZING = "finalizing"
        COMPLETED = "completed"
        FAILED = "failed"
        EXPIRED = "expired"
        CANCELLING = "cancelling"
        CANCELLED = "cancelled"

    # Where a batch that stops running ends: finalizing writes its files, then takes the status it names.
    class Ending(models.TextChoices):
        NONE = ""
        COMPLETED = "completed"
        EXPIRED = "expired"
        CANCELLED = "cancelled"
        FAILED = "failed"

    OPEN = (Status.VALIDATING, Status.IN_PROGRESS, Status.FINALIZING, Status.CANCELLING)

    public_id = models.CharField(max_length=40, unique=True, default=new_batch_id, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="batches")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    input_file = models.ForeignKey(BatchFile, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    input_file_public_id = models.CharField(max_length=40)  # kept when the input file is deleted
    endpoint = models.CharField(max_length=64)
    completion_window = models.CharField(max_length=8, default="24h")
    metadata = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.VALIDATING)
    ending = models.CharField(max_length=16, choices=Ending.choices, default=Ending.NONE, blank=True)
    errors = models.JSONField(default=list, blank=True)  # [{code, message, param, line}]
    total = models.PositiveIntegerField(default=0)
    completed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    output_file = models.ForeignKey(BatchFile, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    error_file = models.ForeignKey(BatchFile, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    in_progress_at = models.DateTimeField(null=True, blank=True)
    finalizing_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    cancelling_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    unscoped_objects = models.Manager()
    objects: TenantScopedManager[Batch] = TenantScopedManager()  # type: ignore[assignment]  # django-stubs types managers as Self

    class Meta:
        default_manager_name = "unscoped_objects"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="batch_tenant_created"),
            models.Index(fields=["status"], name="batch_status"),
        ]

    def __str__(self) -> str:
        return self.public_id

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN

    @property
    def answered(self) -> int:
        return self.completed + self.failed


class BatchLine(models.Model):
    """One request of a running batch. ``public_id`` is its request id at the gateway, the same on every try."""

    class State(models.TextChoices):
        QUEUED = "queued"
        CLAIMED = "claimed"  # a worker holds it until ``claimed_until``; past that, another may take it
        DONE = "done"

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="lines")
    index = models.PositiveIntegerField()  # 1-based line number in the input file
    public_id = models.CharField(max_length=40, default=new_line_id)
    custom_id = models.CharField(max_length=CUSTOM_ID_MAX_LENGTH)
    body = models.TextField()
    state = models.CharField(max_length=8, choices=State.choices, default=State.QUEUED)
    claim = models.CharField(max_length=32, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)  # the gateway's answer, when it ran
    answer = models.TextField(blank=True)  # the answer's body (JSON)

    unscoped_objects = models.Manager()
    objects: TenantScopedManager[BatchLine] = TenantScopedManager("batch__tenant")  # type: ignore[assignment]  # django-stubs types managers as Self

    class Meta:
        default_manager_name = "unscoped_objects"
        constraints = [models.UniqueConstraint(fields=["batch", "index"], name="batchline_unique_index")]
        indexes = [models.Index(fields=["batch", "state", "index"], name="batchline_batch_state")]

    def __str__(self) -> str:
        return self.public_id
