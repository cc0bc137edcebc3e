"""Model deployments, their immutable revisions and traffic weights, and deployment events."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from controlplane.contracts import protocols
from controlplane.contracts.protocols import PROTOCOLS, default_protocol, protocol_refusal
from controlplane.scoping import TenantScopedManager
from controlplane.validators import DEPLOYMENT_NAME_MAX_LENGTH, DEPLOYMENT_NAME_VALIDATORS
from deployments.sizing import SIZING_FIELDS, Sizing, default_sizing, sizing_for, sizing_refusals
from tenants.models import Tenant

# Fields of a deployment whose change makes a new revision (everything that changes what a replica runs).
REVISION_SPEC_FIELDS = (
    "runtime",
    "model",
    "image",
    "args",
    "env",
    "secret_env",
    "gpu_type",
    "gpu_count",
    *SIZING_FIELDS,
    # What a builtin replica serves (``python -m modelserver --protocol v2``); absent from a spec at its runtime's
    # default (``revision_spec``).
    "protocol",
)
# Revision fields left out of the frozen spec at their default, so revisions made before they existed hash alike.
# ``protocol``'s default depends on the runtime: ``revision_spec`` leaves it out at ``default_protocol(runtime)``.
_OMITTED_AT_DEFAULT: dict[str, Any] = {**dict.fromkeys(SIZING_FIELDS, None), "secret_env": {}}
# Fields only the platform writes (reconciler, autoscaler, services); the API and the admin show them read-only.
SYSTEM_FIELDS = (
    "generation",
    "observed_generation",
    "status",
    "desired_replicas",
    "ready_replicas",
    "conditions",
    "created_by",
    "created_at",
    "updated_at",
)


def unknown_gpu_type(gpu_type: str) -> str | None:
    """Why a deployment's ``gpu_type`` is refused: not one of ``FRONTDOOR_GPU_TYPES``. None when known or blank."""
    if gpu_type and gpu_type not in settings.FRONTDOOR_GPU_TYPES:
        return f"unknown GPU type {gpu_type!r}; known: {', '.join(settings.FRONTDOOR_GPU_TYPES)}"
    return None


class Runtime(models.TextChoices):
    VLLM = "vllm"
    TGI = "tgi"
    TRITON = "triton"
    BUILTIN = "builtin"
    EXTERNAL = "external"


class Protocol(models.TextChoices):
    """The API a deployment's replicas speak (``controlplane.contracts.protocols``)."""

    OPENAI = protocols.OPENAI, "OpenAI"
    V2 = protocols.V2, "Open Inference Protocol (v2)"


# The runtimes whose replicas can serve /v1/images/generations. The built-in server makes images in its OpenAI mode,
# and an external endpoint is whatever server its tenant points at; vLLM and TGI serve text models only, and Triton
# speaks v2, which has no images route.
IMAGE_RUNTIMES = frozenset({Runtime.BUILTIN, Runtime.EXTERNAL})


def spec_protocol(spec: dict[str, Any]) -> str:
    """The protocol a revision's frozen spec serves: its own, or its runtime's default when the spec names none."""
    return str(spec.get("protocol") or default_protocol(str(spec.get("runtime") or Runtime.BUILTIN)))


class ModelDeployment(models.Model):
    """A model served for a tenant under a tenant-unique name (the OpenAI ``model`` clients send)."""

    class DesiredState(models.TextChoices):
        RUNNING = "running"
        STOPPED = "stopped"
        DELETING = "deleting"

    class Status(models.TextChoices):
        PENDING = "pending"
        PROGRESSING = "progressing"
        READY = "ready"
        DEGRADED = "degraded"
        STOPPED = "stopped"
        DELETING = "deleting"

    class AutoscalerClass(models.TextChoices):
        KPA = "kpa"
        HPA = "hpa"

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="deployments")
    name = models.CharField(max_length=DEPLOYMENT_NAME_MAX_LENGTH, validators=list(DEPLOYMENT_NAME_VALIDATORS))
    runtime = models.CharField(max_length=16, choices=Runtime.choices, default=Runtime.BUILTIN)
    model = models.CharField(max_length=200, help_text="model id the replicas serve, e.g. meta-llama/Llama-3.1-8B")
    image = models.CharField(max_length=300, blank=True, help_text="container image; empty = the runtime's default")
    args = models.JSONField(default=list, blank=True)
    env = models.JSONField(default=dict, blank=True)
    # Variables whose values are the tenant's secrets: {"HF_TOKEN": "hf-token"} (variable name to secret name).
    secret_env = models.JSONField(default=dict, blank=True)
    # Runtime ``external``: the secret the gateway sends upstream as ``Authorization: Bearer <value>``.
    upstream_key_secret = models.CharField(max_length=63, blank=True)
    endpoints = models.JSONField(default=list, blank=True, help_text="base URLs, for runtime 'external' only")
    # The front ends name it or get ``default_protocol(runtime)`` (``deployments.services``); the column's default
    # is the snapshot's reading of an absent protocol.
    protocol = models.CharField(
        max_length=8,
        choices=Protocol.choices,
        default=Protocol.OPENAI,
        help_text="the API the replicas speak: openai, or v2 (the Open Inference Protocol); default: the runtime's",
    )
    # Routing only (the gateway sends /v1/images/generations here): no new revision, a new snapshot.
    image_generation = models.BooleanField(
        default=False,
        help_text="the replicas serve /v1/images/generations (protocol openai; runtime builtin or external)",
    )
    gpu_type = models.CharField(max_length=32, blank=True)
    gpu_count = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(16)])
    min_replicas = models.PositiveIntegerField(default=1, validators=[MaxValueValidator(1000)])
    max_replicas = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1), MaxValueValidator(1000)])
    autoscaler_class = models.CharField(max_length=8, choices=AutoscalerClass.choices, default=AutoscalerClass.KPA)
    target_concurrency = models.PositiveIntegerField(default=8, validators=[MinValueValidator(1)])
    slo_p95_latency_ms = models.PositiveIntegerField(null=True, blank=True)
    slo_error_rate = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0), MaxValueValidator(1)])
    timeout_s = models.PositiveIntegerField(default=120, validators=[MinValueValidator(1), MaxValueValidator(3600)])
    max_concurrent_requests = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    # What each replica's pod asks for; null: the default for the runtime and GPU count (``deployments.sizing``).
    # The bounds are ``sizing.BOUNDS``, checked in clean().
    cpu_cores = models.FloatField(null=True, blank=True)
    memory_gib = models.FloatField(null=True, blank=True, help_text="includes the shared memory")
    shm_gib = models.FloatField(null=True, blank=True, help_text="shared memory, less than memory_gib")
    ephemeral_storage_gib = models.FloatField(null=True, blank=True)
    startup_timeout_s = models.PositiveIntegerField(null=True, blank=True)
    # How long a request may wait while the deployment starts from zero; null: the startup window on Kubernetes,
    # the gateway's FRONTDOOR_GATEWAY_COLD_HOLD_S on the local backend.
    cold_start_timeout_s = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(3600)]
    )
    # How long the deployment stays idle at one replica before it may scale to zero (a GPU pod that reloads its
    # weights for minutes should not thrash); null: FRONTDOOR_SCALE_TO_ZERO_GRACE_S.
    scale_to_zero_grace_s = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(0), MaxValueValidator(86400)]
    )

    desired_state = models.CharField(max_length=16, choices=DesiredState.choices, default=DesiredState.RUNNING)
    # Bumped on every change the reconciler must act on; observed_generation is what it last converged.
    generation = models.PositiveBigIntegerField(default=1)
    observed_generation = models.PositiveBigIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    desired_replicas = models.PositiveIntegerField(default=0)
    ready_replicas = models.PositiveIntegerField(default=0)
    conditions = models.JSONField(default=list, blank=True)

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    unscoped_objects = models.Manager()
    objects = TenantScopedManager()

    class Meta:
        default_manager_name = "unscoped_objects"
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="deployment_unique_name_per_tenant"),
            models.CheckConstraint(condition=Q(min_replicas__lte=F("max_replicas")), name="deployment_min_le_max"),
            models.CheckConstraint(condition=Q(gpu_count=0) | ~Q(gpu_type=""), name="deployment_gpu_type_when_gpus"),
        ]
        indexes = [models.Index(fields=["tenant", "status"], name="deployment_tenant_status")]

    def __str__(self) -> str:
        return f"{self.tenant_id}/{self.name}"

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.min_replicas > self.max_replicas:
            errors["min_replicas"] = f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})"
        if self.gpu_count and not self.gpu_type:
            errors["gpu_type"] = "gpu_type is required when gpu_count > 0"
        if gpu_type_refusal := unknown_gpu_type(self.gpu_type):
            errors["gpu_type"] = gpu_type_refusal
        if self.runtime == Runtime.EXTERNAL and not self.endpoints:
            errors["endpoints"] = "runtime 'external' needs at least one endpoint URL"
        # An unknown protocol is the field's own error (not one of its choices); here only the runtime's refusal.
        if self.protocol in PROTOCOLS and (refusal := protocol_refusal(self.runtime, self.protocol)):
            errors["protocol"] = refusal
        if refusal := self.image_generation_refusal():
            errors["image_generation"] = refusal
        for name, refusal in sizing_refusals(self.runtime, self._sizing_gpu_count(), self.sizing_values()).items():
            # Shared memory left to its default and memory set below it: the field given is the one to change.
            field = "memory_gib" if name == "shm_gib" and self.shm_gib is None else name
            errors.setdefault(field, refusal)
        if errors:
            raise ValidationError(errors)

    def image_generation_refusal(self) -> str:
        """Why this deployment cannot declare ``image_generation`` ("" when it can, or does not)."""
        if self.image_generation is not True:
            return ""  # False; a non-boolean fails the field's own validation
        if self.protocol != Protocol.OPENAI:
            return f"images are an OpenAI route (/v1/images/generations); protocol {self.protocol!r} has none"
        if self.runtime not in IMAGE_RUNTIMES:
            return f"runtime {self.runtime!r} serves no images; image_generation needs runtime builtin or external"
        return ""

    def revision_spec(self) -> dict[str, Any]:
        """The part of the deployment a revision freezes.

        A sizing field left to its default, no ``secret_env``, or the runtime's own protocol, is absent rather than
        null, empty or spelled out, so revisions made before those fields existed and revisions made since with the
        defaults freeze the same spec (and hash alike).
        """
        omitted = {**_OMITTED_AT_DEFAULT, "protocol": default_protocol(self.runtime)}
        spec = {field: getattr(self, field) for field in REVISION_SPEC_FIELDS}
        return {field: value for field, value in spec.items() if field not in omitted or value != omitted[field]}

    def sizing_values(self) -> dict[str, Any]:
        """The sizing fields as set (None: the default)."""
        return {field: getattr(self, field) for field in SIZING_FIELDS}

    def _sizing_gpu_count(self) -> int:
        # clean() also runs when gpu_count failed its own validation; the defaults then assume no GPUs.
        count = self.gpu_count
        return count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else 0

    @property
    def sizing(self) -> Sizing:
        """What each replica's pod asks for: the fields that are set, the runtime's defaults for the rest."""
        return sizing_for(self.runtime, self._sizing_gpu_count(), self.sizing_values())

    @property
    def sizing_defaults(self) -> Sizing:
        """The sizing a replica gets with every sizing field left blank."""
        return default_sizing(self.runtime, self._sizing_gpu_count())

    @property
    def gpus_per_replica(self) -> int:
        return self.gpu_count if self.gpu_type else 0

    def set_condition(self, type_: str, status: bool, reason: str, message: str = "") -> bool:
        """Set one condition in memory (Kubernetes style); returns True when something changed."""
        now = timezone.now().isoformat()
        wanted = {"type": type_, "status": "True" if status else "False", "reason": reason, "message": message}
        for condition in self.conditions:
            if condition.get("type") == type_:
                current = {k: condition.get(k) for k in ("type", "status", "reason", "message")}
                if current == wanted:
                    return False
                if condition.get("status") != wanted["status"]:
                    condition["lastTransitionTime"] = now
                condition.update(wanted)
                return True
        self.conditions.append({**wanted, "lastTransitionTime": now})
        return True


def spec_digest(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Revision(models.Model):
    """An immutable snapshot of a deployment's spec. Traffic weights across revisions make canaries."""

    deployment = models.ForeignKey(ModelDeployment, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    spec = models.JSONField()
    spec_hash = models.CharField(max_length=16)
    weight = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(100)])
    # Observed by the reconciler: ready replica base URLs and counts.
    endpoints = models.JSONField(default=list, blank=True)
    desired_replicas = models.PositiveIntegerField(default=0)
    ready_replicas = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    unscoped_objects = models.Manager()
    objects = TenantScopedManager("deployment__tenant")

    class Meta:
        default_manager_name = "unscoped_objects"
        ordering = ["deployment_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["deployment", "number"], name="revision_unique_number"),
            models.CheckConstraint(condition=Q(weight__lte=100), name="revision_weight_le_100"),
        ]

    def __str__(self) -> str:
        return f"{self.deployment_id}/{self.name}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            stored = Revision.unscoped_objects.filter(pk=self.pk).values_list("spec", flat=True).first()
            if stored is not None and stored != self.spec:
                raise ValidationError({"spec": "a revision's spec is immutable; change the deployment instead"})
        self.spec_hash = spec_digest(self.spec)
        super().save(*args, **kwargs)

    @property
    def name(self) -> str:
        return f"r{self.number}"


class DeploymentEvent(models.Model):
    """Something that happened to a deployment: reconcile results, scaling, rollouts, SLO breaches."""

    class Kind(models.TextChoices):
        NORMAL = "Normal"
        WARNING = "Warning"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="deployment_events")
    deployment = models.ForeignKey(ModelDeployment, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.NORMAL)
    reason = models.CharField(max_length=64)
    message = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    unscoped_objects = models.Manager()
    objects = TenantScopedManager()

    class Meta:
        default_manager_name = "unscoped_objects"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["deployment", "-created_at"], name="event_deployment_created")]

    def __str__(self) -> str:
        return f"{self.reason}: {self.message[:40]}"

    @classmethod
    def record(cls, deployment: ModelDeployment, reason: str, message: str = "", warning: bool = False) -> None:
        cls.unscoped_objects.create(
            tenant_id=deployment.tenant_id,
            deployment=deployment,
            reason=reason,
            message=message,
            kind=cls.Kind.WARNING if warning else cls.Kind.NORMAL,
        )
