"""REST endpoints for a tenant's batches and batch files, under ``/api/v1/tenants/{tenant}/batches/`` and ``files/``.

Batches are created through the gateway's OpenAI-compatible ``/v1/batches`` with an inference key; here tenant
members, staff and keys with the ``read`` or ``manage`` scope watch them, and admins (or ``manage`` keys) cancel
them, through ``batches.services`` (the console calls the same functions). Files are listed and downloaded here,
never uploaded. Another tenant's batch or file is a 404.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response

from batches import services
from batches.models import Batch, BatchFile
from batches.openai_views import content_response
from batches.serializers import BatchFileSerializer, BatchSerializer
from controlplane.api import TenantScopedViewSet
from controlplane.idempotency import IdempotentMixin
from controlplane.permissions import IsAuthenticatedPrincipal
from tenants.models import Role

TENANT_PARAM = OpenApiParameter("tenant", OpenApiTypes.STR, OpenApiParameter.PATH, description="tenant slug")
BATCH_PARAM = OpenApiParameter("batch_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="batch id (batch_…)")
FILE_PARAM = OpenApiParameter("file_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="file id (file-…)")
_ENDED_409 = OpenApiResponse(description="the batch already ended (completed, failed, expired or cancelled)")


class BatchFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=Batch.Status.choices)

    class Meta:
        model = Batch
        fields = ["status"]


class BatchFileFilter(django_filters.FilterSet):
    purpose = django_filters.ChoiceFilter(choices=BatchFile.Purpose.choices)

    class Meta:
        model = BatchFile
        fields = ["purpose"]


@extend_schema_view(
    list=extend_schema(summary="List batches, newest first", parameters=[TENANT_PARAM]),
    retrieve=extend_schema(summary="Get a batch", parameters=[TENANT_PARAM, BATCH_PARAM]),
    cancel=extend_schema(
        summary="Cancel a batch (admin): lines in flight finish, the rest are reported as cancelled",
        parameters=[TENANT_PARAM, BATCH_PARAM],
        request=None,
        responses={200: BatchSerializer, 409: _ENDED_409},
    ),
)
class BatchViewSet(IdempotentMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """A tenant's batches, by public id. Cancelling one already cancelling answers it unchanged."""

    model = Batch
    permission_classes = [IsAuthenticatedPrincipal]
    queryset = Batch.unscoped_objects.none()  # for the schema generator only; requests use the scoped queryset
    serializer_class = BatchSerializer
    lookup_field = "public_id"
    lookup_url_kwarg = "batch_id"
    filterset_class = BatchFilter
    ordering_fields = ["created_at"]
    ordering = ["-created_at", "-id"]
    read_role = Role.VIEWER
    write_role = Role.ADMIN
    action_roles = {"cancel": Role.ADMIN}

    def scope_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.select_related("output_file", "error_file", "api_key")

    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        batch = self.get_object()
        cancelled = services.cancel_batch(
            self.tenant, batch.public_id, actor=self.principal, request_id=self.request_id
        )
        return Response(self.get_serializer(cancelled).data)


class JsonUnlessAccepted(DefaultContentNegotiation):
    """The renderer the client asked for, else JSON rather than a 406.

    A download may ask for ``Accept: application/octet-stream``: its content is streamed as it is stored, never
    rendered, and its errors answer in JSON like every other route's.
    """

    def select_renderer(self, request: Request, renderers: Any, format_suffix: str | None = None) -> Any:
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            return renderers[0], renderers[0].media_type


@extend_schema_view(
    list=extend_schema(summary="List batch files (inputs uploaded, outputs and errors written), newest first"),
    retrieve=extend_schema(summary="Get a batch file's metadata", parameters=[TENANT_PARAM, FILE_PARAM]),
    content=extend_schema(
        summary="Download a batch file's content (JSON lines)",
        parameters=[TENANT_PARAM, FILE_PARAM],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
    ),
)
class BatchFileViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """A tenant's batch files, by public id: metadata, and the content streamed from the batch storage."""

    model = BatchFile
    permission_classes = [IsAuthenticatedPrincipal]
    queryset = BatchFile.unscoped_objects.none()  # for the schema generator only, as above
    serializer_class = BatchFileSerializer
    lookup_field = "public_id"
    lookup_url_kwarg = "file_id"
    filterset_class = BatchFileFilter
    ordering_fields = ["created_at"]
    ordering = ["-created_at", "-id"]
    read_role = Role.VIEWER
    write_role = Role.ADMIN
    content_negotiation_class = JsonUnlessAccepted

    def scope_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.select_related("api_key")

    @action(detail=True, methods=["get"])
    def content(self, request: Request, *args: Any, **kwargs: Any) -> StreamingHttpResponse:
        return content_response(self.get_object())
