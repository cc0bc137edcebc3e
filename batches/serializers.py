"""The REST API's batches and batch files (``batches.api``): read-only, every field from the row.

Ids are the public ones the OpenAI-compatible routes show (``batch_…``, ``file-…``); a batch names its files by
those ids, and ``created_by`` is the name of the API key that created the batch or uploaded the file.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from batches.models import Batch, BatchFile

_KEY_NAME_HELP = "the name of the API key that created it (null once the key is deleted)"


class RequestCountsSerializer(serializers.Serializer[Batch]):
    total = serializers.IntegerField(read_only=True, help_text="the input's lines")
    completed = serializers.IntegerField(read_only=True, help_text="lines answered with a 2xx")
    failed = serializers.IntegerField(read_only=True, help_text="lines answered with an error")


class BatchUsageSerializer(serializers.Serializer[Batch]):
    input_tokens = serializers.IntegerField(source="prompt_tokens", read_only=True)
    output_tokens = serializers.IntegerField(source="completion_tokens", read_only=True)
    total_tokens = serializers.SerializerMethodField()

    def get_total_tokens(self, obj: Batch) -> int:
        return obj.prompt_tokens + obj.completion_tokens


class BatchErrorSerializer(serializers.Serializer[dict[str, Any]]):
    """Why a batch failed or stopped early (the lines' own errors are in its error file)."""

    code = serializers.CharField()
    message = serializers.CharField()
    param = serializers.CharField(allow_null=True)
    line = serializers.IntegerField(allow_null=True, help_text="the input line it concerns, when one")


def batch_errors(batch: Batch) -> list[dict[str, Any]]:
    """The batch's errors with every key present (the workers leave out ``param`` and ``line`` when unknown)."""
    return [
        {
            "code": str(error.get("code", "")),
            "message": str(error.get("message", "")),
            "param": error.get("param"),
            "line": error.get("line"),
        }
        for error in batch.errors
        if isinstance(error, dict)
    ]


def batch_progress(batch: Batch) -> float:
    """The share of the batch's lines answered so far, 0 to 1 (0 while its lines are not counted yet)."""
    return min(1.0, batch.answered / batch.total) if batch.total else 0.0


class BatchSerializer(serializers.ModelSerializer[Batch]):
    id = serializers.CharField(source="public_id", read_only=True)
    input_file_id = serializers.CharField(source="input_file_public_id", read_only=True)
    output_file_id: serializers.SlugRelatedField[BatchFile] = serializers.SlugRelatedField(
        source="output_file", slug_field="public_id", read_only=True, allow_null=True
    )
    error_file_id: serializers.SlugRelatedField[BatchFile] = serializers.SlugRelatedField(
        source="error_file", slug_field="public_id", read_only=True, allow_null=True
    )
    request_counts = RequestCountsSerializer(source="*", read_only=True)
    progress = serializers.SerializerMethodField(help_text="answered lines / total lines, 0 to 1")
    # The metaclass takes declared fields off the class, so this does not hide ``Serializer.errors``.
    errors = serializers.SerializerMethodField()  # type: ignore[assignment]
    usage = BatchUsageSerializer(source="*", read_only=True)
    created_by = serializers.CharField(source="api_key.name", read_only=True, allow_null=True, help_text=_KEY_NAME_HELP)

    class Meta:
        model = Batch
        fields = [
            "id",
            "status",
            "endpoint",
            "completion_window",
            "input_file_id",
            "output_file_id",
            "error_file_id",
            "request_counts",
            "progress",
            "errors",
            "metadata",
            "usage",
            "created_by",
            "created_at",
            "in_progress_at",
            "finalizing_at",
            "completed_at",
            "failed_at",
            "expired_at",
            "cancelling_at",
            "cancelled_at",
            "expires_at",
        ]
        read_only_fields = fields

    def get_progress(self, obj: Batch) -> float:
        return batch_progress(obj)

    @extend_schema_field(BatchErrorSerializer(many=True))
    def get_errors(self, obj: Batch) -> list[dict[str, Any]]:
        return batch_errors(obj)


class BatchFileSerializer(serializers.ModelSerializer[BatchFile]):
    id = serializers.CharField(source="public_id", read_only=True)
    created_by = serializers.CharField(source="api_key.name", read_only=True, allow_null=True, help_text=_KEY_NAME_HELP)

    class Meta:
        model = BatchFile
        fields = ["id", "filename", "purpose", "bytes", "lines", "created_by", "created_at", "expires_at"]
        read_only_fields = fields
