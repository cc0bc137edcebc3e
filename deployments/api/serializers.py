"""REST serializers for deployments, revisions, traffic, scaling and events.

Ownership and observed fields (tenant, creator, status, conditions, replicas, generation) are read-only: they
come from the context and the reconciler, never from the payload. Cross-field rules live in
``deployments.services.validate_deployment`` so the console applies the same ones.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from controlplane.validators import DEPLOYMENT_NAME_MAX_LENGTH, DEPLOYMENT_NAME_VALIDATORS
from deployments.models import SYSTEM_FIELDS, DeploymentEvent, ModelDeployment, Protocol, Revision
from deployments.models.deployment import unknown_gpu_type
from deployments.services import WRITABLE_FIELDS
from deployments.sizing import BOUNDS

_REVISION_NAME = re.compile(r"^r?([1-9][0-9]{0,8})$")


class RolloutSerializer(serializers.Serializer):
    """How a new revision made by a PATCH takes traffic: ``canary_weight`` percent, the rest kept by the others."""

    canary_weight = serializers.IntegerField(min_value=0, max_value=100)


class TrafficEntrySerializer(serializers.Serializer):
    revision = serializers.CharField(help_text="revision name ('r2') or number")
    weight = serializers.IntegerField(min_value=0, max_value=100)


class StrictFloatField(serializers.FloatField):
    """A JSON number: DRF's FloatField would also take ``"4"`` and ``true``, which a size should never be."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer (``30.0`` is one): never a string or a boolean."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """A JSON boolean: DRF's BooleanField would also take ``"yes"``, ``"on"`` and ``1``."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


def _sizing_field(name: str, help_text: str, integer: bool = False) -> serializers.Field:
    # The bounds show in the schema and are checked here; the model's clean() checks them again for every front end,
    # with what needs the other fields (shared memory below memory).
    least, most = BOUNDS[name]
    if integer:
        return StrictIntegerField(
            required=False, allow_null=True, min_value=int(least), max_value=int(most), help_text=help_text
        )
    return StrictFloatField(required=False, allow_null=True, min_value=least, max_value=most, help_text=help_text)


class SizingSerializer(serializers.Serializer):
    """What each replica's pod asks for: the deployment's sizing fields where set, the defaults elsewhere."""

    cpu_cores = serializers.FloatField()
    memory_gib = serializers.FloatField(help_text="includes the shared memory")
    shm_gib = serializers.FloatField()
    ephemeral_storage_gib = serializers.FloatField()
    startup_timeout_s = serializers.IntegerField()


# The attribute the deployment views prefetch each deployment's revisions into (their numbers and weights).
LISTED_REVISIONS = "listed_revisions"


class DeploymentSerializer(serializers.ModelSerializer):
    """A model deployment. ``name`` is the OpenAI ``model`` clients send; it cannot change after creation."""

    tenant: serializers.SlugRelatedField = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    name = serializers.CharField(max_length=DEPLOYMENT_NAME_MAX_LENGTH, validators=list(DEPLOYMENT_NAME_VALIDATORS))
    args = serializers.ListField(
        child=serializers.CharField(max_length=1000, allow_blank=True), max_length=64, required=False
    )
    env = serializers.DictField(child=serializers.CharField(max_length=4096, allow_blank=True), required=False)
    secret_env = serializers.DictField(
        child=serializers.CharField(max_length=63),
        required=False,
        help_text='variables set from the tenant\'s secrets: variable name to secret name, e.g. {"HF_TOKEN": "hf"}',
    )
    upstream_key_secret = serializers.CharField(
        max_length=63,
        allow_blank=True,
        required=False,
        help_text="runtime 'external': the secret sent upstream as 'Authorization: Bearer <value>'",
    )
    endpoints = serializers.ListField(
        child=serializers.CharField(max_length=500), max_length=32, required=False, help_text="runtime 'external' only"
    )
    # Left out on create: the runtime's default; left out on a PATCH that changes the runtime: the new runtime's when
    # it cannot speak the current one (``deployments.services``).
    protocol = serializers.ChoiceField(
        choices=Protocol.choices,
        required=False,
        help_text="the API the replicas speak: 'openai', or 'v2' (the Open Inference Protocol, "
        "/v2/models/{name}/infer); default: the runtime's (triton speaks v2 only, vllm and tgi openai only)",
    )
    image_generation = StrictBooleanField(
        required=False,
        help_text="the replicas serve /v1/images/generations: protocol 'openai' and runtime builtin or external only",
    )
    gpu_type = serializers.CharField(max_length=32, allow_blank=True, required=False)
    # Null (or left out on create): the default for the runtime and GPU count, shown in ``sizing``.
    cpu_cores = _sizing_field("cpu_cores", "CPU cores per replica; null: the default")
    memory_gib = _sizing_field("memory_gib", "memory per replica in GiB, shared memory included; null: the default")
    shm_gib = _sizing_field("shm_gib", "shared memory (/dev/shm) per replica in GiB, below memory_gib; null: default")
    ephemeral_storage_gib = _sizing_field(
        "ephemeral_storage_gib", "ephemeral storage per replica in GiB; null: the default"
    )
    startup_timeout_s = _sizing_field(
        "startup_timeout_s", "how long a replica may take to start (load its model); null: the default", integer=True
    )
    sizing = serializers.SerializerMethodField()
    # Answers may say "deleting" (a DELETE's 202); a client may only ask for running or stopped.
    desired_state = serializers.ChoiceField(choices=ModelDeployment.DesiredState.choices, required=False)
    rollout = RolloutSerializer(write_only=True, required=False, help_text="PATCH only: canary for a new revision")
    traffic = serializers.SerializerMethodField()
    latest_revision = serializers.SerializerMethodField()

    class Meta:
        model = ModelDeployment
        fields = [
            "id",
            "tenant",
            *WRITABLE_FIELDS,
            "rollout",
            "sizing",
            "generation",
            "observed_generation",
            "status",
            "desired_replicas",
            "ready_replicas",
            "conditions",
            "traffic",
            "latest_revision",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "tenant", *SYSTEM_FIELDS]

    def validate_name(self, value: str) -> str:
        if self.instance is not None:
            if value != self.instance.name:
                raise serializers.ValidationError("a deployment cannot be renamed; create a new one")
            return value
        tenant = self.context["tenant"]
        if ModelDeployment.objects.for_tenant(tenant).filter(name=value).exists():
            raise serializers.ValidationError(f"a deployment named {value!r} already exists in this tenant")
        return value

    def validate_desired_state(self, value: str) -> str:
        if value == ModelDeployment.DesiredState.DELETING:
            raise serializers.ValidationError("use DELETE to delete a deployment; desired_state is running or stopped")
        return value

    def validate_gpu_type(self, value: str) -> str:
        if refusal := unknown_gpu_type(value):
            raise serializers.ValidationError(refusal)
        return value

    def validate_rollout(self, value: dict[str, Any]) -> dict[str, Any]:
        if self.instance is None:
            raise serializers.ValidationError("rollout applies to updates; a new deployment's r1 takes all traffic")
        return value

    def _revisions(self, deployment: ModelDeployment) -> list[Revision]:
        # Prefetched by the views, numbers and weights only (``LISTED_REVISIONS``); sorted here so a prefetch order
        # never matters.
        revisions = getattr(deployment, LISTED_REVISIONS, None)
        return sorted(deployment.revisions.all() if revisions is None else revisions, key=lambda r: r.number)

    @extend_schema_field(TrafficEntrySerializer(many=True))
    def get_traffic(self, deployment: ModelDeployment) -> list[dict[str, Any]]:
        return [{"revision": r.name, "weight": r.weight} for r in self._revisions(deployment) if r.weight > 0]

    @extend_schema_field(SizingSerializer)
    def get_sizing(self, deployment: ModelDeployment) -> dict[str, Any]:
        return dataclasses.asdict(deployment.sizing)

    @extend_schema_field(OpenApiTypes.INT)
    def get_latest_revision(self, deployment: ModelDeployment) -> int | None:
        revisions = self._revisions(deployment)
        return revisions[-1].number if revisions else None


class ScaleSerializer(serializers.Serializer):
    """Replica bounds; a bound left out keeps its current value."""

    min_replicas = serializers.IntegerField(min_value=0, max_value=1000, required=False)
    max_replicas = serializers.IntegerField(min_value=1, max_value=1000, required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            raise serializers.ValidationError("give min_replicas, max_replicas or both")
        deployment: ModelDeployment = self.context["deployment"]
        low = attrs.get("min_replicas", deployment.min_replicas)
        high = attrs.get("max_replicas", deployment.max_replicas)
        if low > high:
            field = "min_replicas" if "min_replicas" in attrs else "max_replicas"
            raise serializers.ValidationError({field: f"min_replicas ({low}) exceeds max_replicas ({high})"})
        return attrs


@extend_schema_field(
    {
        "oneOf": [
            {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 100}},
            {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"revision": {"type": "string"}, "weight": {"type": "integer"}},
                    "required": ["revision", "weight"],
                },
            },
        ],
        "example": {"r1": 80, "r2": 20},
    }
)
class WeightsField(serializers.Field):
    """``{"r1": 80, "r2": 20}`` or ``[{"revision": "r1", "weight": 80}, ...]``, parsed to {revision number: weight}."""

    default_error_messages = {
        # str.format()ted by fail(): braces doubled.
        "shape": 'give {{"r1": 80, "r2": 20}} or [{{"revision": "r1", "weight": 80}}, ...]',
    }

    def to_internal_value(self, data: Any) -> dict[int, int]:
        if isinstance(data, list):
            pairs = []
            for item in data:
                if not isinstance(item, dict) or set(item) != {"revision", "weight"}:
                    self.fail("shape")
                pairs.append((item["revision"], item["weight"]))
        elif isinstance(data, dict):
            pairs = list(data.items())
        else:
            self.fail("shape")
        weights: dict[int, int] = {}
        for revision, weight in pairs:
            match = _REVISION_NAME.match(str(revision)) if isinstance(revision, str | int) else None
            if match is None or isinstance(revision, bool):
                raise serializers.ValidationError(f"{revision!r} is not a revision name such as 'r1'")
            number = int(match.group(1))
            if number in weights:
                raise serializers.ValidationError(f"revision r{number} is given twice")
            if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 100:
                raise serializers.ValidationError(f"r{number}: weight must be an integer between 0 and 100")
            weights[number] = weight
        if not weights:
            raise serializers.ValidationError("give at least one revision")
        if sum(weights.values()) != 100:
            raise serializers.ValidationError(f"weights must sum to 100, not {sum(weights.values())}")
        return weights

    def to_representation(self, value: dict[int, int]) -> dict[str, int]:
        return {f"r{number}": weight for number, weight in value.items()}


class TrafficSerializer(serializers.Serializer):
    weights = WeightsField()


class RevisionSerializer(serializers.ModelSerializer):
    """An immutable revision: its frozen spec, its traffic weight and what the reconciler observed."""

    name = serializers.CharField(read_only=True)

    class Meta:
        model = Revision
        fields = [
            "name",
            "number",
            "spec",
            "spec_hash",
            "weight",
            "endpoints",
            "desired_replicas",
            "ready_replicas",
            "created_at",
        ]
        read_only_fields = fields


class DeploymentEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeploymentEvent
        fields = ["id", "kind", "reason", "message", "created_at"]
        read_only_fields = fields
