"""REST endpoints for SLO samples and canary rollouts, under ``/api/v1/tenants/{tenant}/deployments/{name}/``.

- ``slo/?range=1h|24h|30d[&revision=rN]``: samples for charts (10 s rows for an hour, 5 min rows beyond), plus the
  deployment's objectives and whether they are breached now;
- ``rollout/``: GET the latest rollout (or ``null``); POST ``{"action": "start", "revision": "r2", "steps": [...],
  "pause_s": 30, "max_error_rate_delta": 0.05, "max_p95_ratio": 1.5}`` or ``{"action": "promote"|"pause"|
  "resume"|"rollback"}``.

Scoping and roles come from ``TenantScopedViewSet`` (through the deployments API's ``DeploymentChildViewSet``):
viewers read, members act; another tenant's deployment is a 404. Rollout POSTs take ``Idempotency-Key``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.idempotency import IdempotentMixin
from controlplane.schema import ObjectSchema
from deployments import rollout as rollouts
from deployments.api.views import DEPLOYMENT_PARAM, TENANT_PARAM, DeploymentChildViewSet
from deployments.models import Revision, Rollout, SloSample, SloStatus

RANGES = {
    "1h": (timedelta(hours=1), SloSample.Resolution.TEN_SECONDS),
    "24h": (timedelta(hours=24), SloSample.Resolution.FIVE_MINUTES),
    "30d": (timedelta(days=30), SloSample.Resolution.FIVE_MINUTES),
}


class SloSampleSerializer(serializers.ModelSerializer[SloSample]):
    revision = serializers.SerializerMethodField()
    error_rate = serializers.FloatField(read_only=True)
    ttft_avg_ms = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = SloSample
        fields = [
            "interval_start",
            "resolution",
            "revision",
            "requests",
            "errors",
            "error_rate",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "ttft_avg_ms",
            "ttft_p95_ms",
            "in_flight",
            "replicas_ready",
            "replicas_desired",
        ]

    def get_revision(self, sample: SloSample) -> str | None:
        numbers: dict[int, int] = self.context.get("revision_numbers", {})
        return f"r{numbers[sample.revision_id]}" if sample.revision_id in numbers else None


class RolloutActionSerializer(serializers.Serializer[dict[str, Any]]):
    action = serializers.ChoiceField(choices=["start", "promote", "pause", "resume", "rollback"])
    revision = serializers.RegexField(r"^r?[0-9]+$", required=False)
    steps = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=100), required=False)
    pause_s = serializers.IntegerField(min_value=0, max_value=86_400, required=False)
    max_error_rate_delta = serializers.FloatField(min_value=0, max_value=1, required=False)
    max_p95_ratio = serializers.FloatField(min_value=1, required=False)
    min_requests = serializers.IntegerField(min_value=0, max_value=1_000_000, required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["action"] == "start" and "revision" not in attrs:
            raise serializers.ValidationError({"revision": "required to start a rollout"})
        return attrs


def _parse_revision(value: str) -> int:
    return int(value.lstrip("r"))


class SloObjectivesSerializer(serializers.Serializer[dict[str, Any]]):
    p95_latency_ms = serializers.IntegerField(allow_null=True)
    error_rate = serializers.FloatField(allow_null=True)


class SloReportSerializer(serializers.Serializer[dict[str, Any]]):
    """The answer of ``GET .../slo/``: the range, the objectives, whether they are breached, and the samples."""

    range = serializers.ChoiceField(choices=list(RANGES))
    resolution = serializers.ChoiceField(choices=SloSample.Resolution.choices)
    objectives = SloObjectivesSerializer()
    breached = serializers.BooleanField()
    breach_reason = serializers.CharField(allow_blank=True)
    samples = SloSampleSerializer(many=True)


class RolloutStateSerializer(serializers.Serializer[dict[str, Any]]):
    """The answer of ``.../rollout/``: the latest rollout (``null`` when the deployment never had one)."""

    rollout = serializers.DictField(allow_null=True)


@extend_schema(parameters=[TENANT_PARAM, DEPLOYMENT_PARAM])
@extend_schema_view(list=extend_schema(responses=SloReportSerializer))
class SloSampleViewSet(DeploymentChildViewSet):
    """A deployment's SLO samples over a range, for charts."""

    schema = ObjectSchema()
    model = SloSample
    serializer_class = SloSampleSerializer
    pagination_class = None
    filter_backends: list[Any] = []

    def scope_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(deployment=self.deployment)

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        range_name = request.query_params.get("range", "1h")
        if range_name not in RANGES:
            raise serializers.ValidationError({"range": f"one of {', '.join(RANGES)}"})
        span, resolution = RANGES[range_name]
        numbers = dict(Revision.unscoped_objects.filter(deployment=self.deployment).values_list("pk", "number"))
        samples = self.get_queryset().filter(resolution=resolution, interval_start__gte=timezone.now() - span)
        revision = request.query_params.get("revision")
        if revision in (None, "", "all"):
            samples = samples.filter(revision__isnull=True)
        else:
            by_number = {number: pk for pk, number in numbers.items()}
            if not revision.lstrip("r").isdigit() or _parse_revision(revision) not in by_number:
                raise serializers.ValidationError({"revision": f"no revision {revision!r}"})
            samples = samples.filter(revision_id=by_number[_parse_revision(revision)])
        status_row = SloStatus.objects.filter(deployment=self.deployment).first()
        serializer = SloSampleSerializer(
            samples.order_by("interval_start"),
            many=True,
            context={**self.get_serializer_context(), "revision_numbers": numbers},
        )
        return Response(
            {
                "range": range_name,
                "resolution": resolution,
                "objectives": {
                    "p95_latency_ms": self.deployment.slo_p95_latency_ms,
                    "error_rate": self.deployment.slo_error_rate,
                },
                "breached": bool(status_row and status_row.breached),
                "breach_reason": status_row.reason if status_row and status_row.breached else "",
                "samples": serializer.data,
            }
        )


@extend_schema(parameters=[TENANT_PARAM, DEPLOYMENT_PARAM])
@extend_schema_view(
    list=extend_schema(responses=RolloutStateSerializer),
    create=extend_schema(responses={200: RolloutStateSerializer, 201: RolloutStateSerializer}),
)
class RolloutViewSet(IdempotentMixin, DeploymentChildViewSet):
    """The deployment's canary rollout: its status, and start / promote / pause / resume / rollback.

    POSTs honour ``Idempotency-Key``: a retried ``start`` replays the first answer instead of a 409.
    """

    schema = ObjectSchema()
    model = Rollout
    serializer_class = RolloutActionSerializer
    pagination_class = None
    filter_backends: list[Any] = []

    def scope_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(deployment=self.deployment).select_related("revision", "stable_revision")

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        latest = self.get_queryset().order_by("-started_at", "-id").first()
        return Response({"rollout": latest.as_dict() if latest else None})

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        code: int
        if data["action"] == "start":
            options = {
                k: data[k] for k in ("pause_s", "max_error_rate_delta", "max_p95_ratio", "min_requests") if k in data
            }
            if "steps" in data:
                options["steps"] = data["steps"]
            found = rollouts.start_rollout(
                self.deployment,
                revision_number=_parse_revision(data["revision"]),
                **options,
                actor=self.principal,
                request_id=self.request_id,
            )
            code = status.HTTP_201_CREATED
        else:
            found = rollouts.act(self.deployment, data["action"], actor=self.principal, request_id=self.request_id)
            code = status.HTTP_200_OK
        found.refresh_from_db()
        return Response({"rollout": found.as_dict()}, status=code)


def register(router: Any, deployment_prefix: str) -> None:
    """Add ``slo/`` and ``rollout/`` under ``deployment_prefix`` (the deployments router's per-deployment regex)."""
    router.register(deployment_prefix + r"/slo", SloSampleViewSet, basename="deployment-slo")
    router.register(deployment_prefix + r"/rollout", RolloutViewSet, basename="deployment-rollout")
