"""REST endpoint for a tenant's usage: ``GET /api/v1/tenants/{tenant}/usage/?from=&to=&group_by=&traffic=``.

``group_by`` is day, deployment, key or traffic; ``traffic`` (interactive or batch) counts one kind only. The figures
come from ``quotas.reports`` (the same queries as the console's Usage page and its CSV).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.api import TenantScopedViewSet
from controlplane.permissions import IsAuthenticatedPrincipal
from quotas import reports
from quotas.models import UsageRollup
from tenants.models import Role

API_GROUPS = ("day", "deployment", "key", "traffic")


class UsageFiguresSerializer(serializers.Serializer[dict[str, Any]]):
    """All traffic's figures, and (``batch_*``) the part of them that came from Batch API lines.

    ``inferences`` counts the inferences Open Inference Protocol requests asked (their batch dimension), ``images``
    the images image-generation requests answered; both 0 for traffic of other kinds.
    """

    requests = serializers.IntegerField()
    errors = serializers.IntegerField()  # type: ignore[assignment]  # the metaclass takes it out of the class
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    tokens = serializers.IntegerField()
    batch_requests = serializers.IntegerField()
    batch_prompt_tokens = serializers.IntegerField()
    batch_completion_tokens = serializers.IntegerField()
    batch_tokens = serializers.IntegerField()
    inferences = serializers.IntegerField()
    images = serializers.IntegerField()


class UsageRowSerializer(UsageFiguresSerializer):
    """One group: ``day`` (ISO date), ``deployment`` (+ its id), ``api_key`` (+ its name) or ``traffic``."""

    day = serializers.DateField(required=False)
    deployment = serializers.CharField(required=False)
    deployment_id = serializers.IntegerField(required=False, allow_null=True)
    api_key = serializers.CharField(required=False, allow_null=True)
    api_key_name = serializers.CharField(required=False, allow_null=True)
    traffic = serializers.ChoiceField(choices=reports.TRAFFIC, required=False)


class UsageReportSerializer(serializers.Serializer[dict[str, Any]]):
    tenant = serializers.CharField()
    group_by = serializers.ChoiceField(choices=API_GROUPS)
    traffic = serializers.ChoiceField(choices=reports.TRAFFIC, allow_null=True)  # null: all traffic
    to = serializers.DateField()
    totals = UsageFiguresSerializer()
    results = UsageRowSerializer(many=True)

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        fields = super().get_fields()
        fields["from"] = serializers.DateField()  # ``from`` is a Python keyword, so it cannot be a class attribute
        return fields


def api_row(row: dict[str, Any], group_by: str) -> dict[str, Any]:
    """A grouped report row in the API's shape (public key ids, never database ids of keys)."""
    figures = {name: row[name] for name in reports.FIGURES}
    if group_by == "day":
        return {"day": row["day"], **figures}
    if group_by == "traffic":
        return {"traffic": reports.label_of(row, "traffic"), **figures}
    if group_by == "deployment":
        return {
            "deployment": reports.label_of(row, "deployment"),
            "deployment_id": row["deployment_id"],
            **figures,
        }
    return {"api_key": row["api_key__key_id"], "api_key_name": row["api_key__name"], **figures}


class UsageViewSet(TenantScopedViewSet):
    """Usage of the tenant over whole UTC days, summed per day (every day of the range), deployment, key or traffic."""

    model = UsageRollup
    permission_classes = [IsAuthenticatedPrincipal]
    queryset = UsageRollup.unscoped_objects.none()
    read_role = Role.VIEWER
    serializer_class = UsageReportSerializer
    pagination_class = None
    filter_backends: list[type] = []  # from/to/group_by/traffic are parsed by the report, not by filter backends

    @extend_schema(
        summary="The tenant's usage over a date range",
        parameters=[
            OpenApiParameter("from", OpenApiTypes.DATE, description="first UTC day (default: 29 days before 'to')"),
            OpenApiParameter("to", OpenApiTypes.DATE, description="last UTC day, included (default: today)"),
            OpenApiParameter("group_by", OpenApiTypes.STR, enum=list(API_GROUPS), description="default: day"),
            OpenApiParameter(
                "traffic",
                OpenApiTypes.STR,
                enum=list(reports.TRAFFIC),
                description="count only interactive requests or only Batch API lines (default: all traffic)",
            ),
        ],
        responses=UsageReportSerializer,
    )
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # One report object per request ("retrieve", so the schema describes an object, not an array of them).
        group_by = request.query_params.get("group_by", "day")
        if group_by not in API_GROUPS:
            raise ValidationError({"group_by": [f"must be one of {', '.join(API_GROUPS)}"]})
        try:
            traffic = reports.parse_traffic(request.query_params.get("traffic"))
        except reports.ReportRangeError as exc:
            raise ValidationError({"traffic": [str(exc)]}) from exc
        try:
            period = reports.parse_range(request.query_params.get("from"), request.query_params.get("to"))
        except reports.ReportRangeError as exc:
            raise ValidationError({"from": [str(exc)]}) from exc
        if group_by == "day":
            rows = reports.usage_by_day(period, self.tenant, traffic=traffic)
        else:
            rows = list(reports.usage_grouped(period, group_by, self.tenant, traffic=traffic))
        report = {
            "tenant": self.tenant.slug,
            "group_by": group_by,
            "traffic": traffic,
            "from": period.first,
            "to": period.last,
            "totals": reports.usage_totals(period, self.tenant, traffic=traffic),
            "results": [api_row(row, group_by) for row in rows],
        }
        return Response(UsageReportSerializer(report).data)
