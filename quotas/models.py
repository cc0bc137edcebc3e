"""Per-tenant quotas and per-minute usage rollups."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from controlplane.contracts.gpu_map import gpu_map_error
from controlplane.scoping import TenantScopedManager
from tenants.models import ApiKey, Tenant


def validate_gpu_map(value: object) -> None:
    """``gpus`` is a GPU map ({gpu type: non-negative int}) of the configured GPU types only.

    Named by the migrations as ``quotas.models.validate_gpu_map``; the rule itself is ``gpu_map_error``.
    """
    from django.conf import settings

    if (error := gpu_map_error(value, settings.FRONTDOOR_GPU_TYPES)) is not None:
        raise ValidationError(error)


class Quota(models.Model):
    """What a tenant may allocate and consume. ``None`` for a rate limit means unlimited."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="quota")
    gpus = models.JSONField(default=dict, blank=True, validators=[validate_gpu_map])
    max_replicas = models.PositiveIntegerField(default=8)
    max_deployments = models.PositiveIntegerField(default=10)
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True, default=600)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True, default=200_000)
    max_concurrent_requests = models.PositiveIntegerField(null=True, blank=True, default=64)
    monthly_token_budget = models.PositiveBigIntegerField(null=True, blank=True, default=50_000_000)
    # Batch lines' own per-minute windows, so a tenant's batch never eats its interactive limits (the budget is shared).
    batch_requests_per_minute = models.PositiveIntegerField(null=True, blank=True, default=6000)
    batch_tokens_per_minute = models.PositiveIntegerField(null=True, blank=True, default=2_000_000)
    # CPU/memory/pods for the namespace ResourceQuota on Kubernetes.
    cpu_cores = models.PositiveIntegerField(default=64, validators=[MinValueValidator(1)])
    memory_gib = models.PositiveIntegerField(default=512, validators=[MinValueValidator(1)])
    # The Batch API: batches not yet ended, and their lines not yet answered, across them all.
    max_open_batches = models.PositiveIntegerField(default=10)
    max_batch_queued_lines = models.PositiveIntegerField(default=200_000)
    updated_at = models.DateTimeField(auto_now=True)

    unscoped_objects = models.Manager()
    objects = TenantScopedManager()

    class Meta:
        default_manager_name = "unscoped_objects"

    def __str__(self) -> str:
        return f"quota of {self.tenant_id}"

    def gpus_of(self, gpu_type: str) -> int:
        return int(self.gpus.get(gpu_type, 0))


# What staff set on a quota (every field but its tenant and timestamp), in the order the staff editor and the admin
# list show them: what the tenant may allocate, its rates and token budget, its Kubernetes namespace's size, its
# batches, its GPUs by type. The REST body lists the same fields in the model's order.
QUOTA_FIELDS = (
    "max_deployments",
    "max_replicas",
    "requests_per_minute",
    "tokens_per_minute",
    "max_concurrent_requests",
    "monthly_token_budget",
    "batch_requests_per_minute",
    "batch_tokens_per_minute",
    "cpu_cores",
    "memory_gib",
    "max_open_batches",
    "max_batch_queued_lines",
    "gpus",
)
# The namespace's ResourceQuota on Kubernetes; no other backend uses them.
NAMESPACE_FIELDS = ("cpu_cores", "memory_gib")


class UsageRollup(models.Model):
    """Usage per minute × tenant × key × deployment × traffic, rolled up from the gateway's usage stream.

    ``batch`` sets the Batch API's lines apart from interactive requests: the same minute, key and deployment has
    one row of each. ``inferences`` (Open Inference Protocol requests: the inferences asked) and ``images`` (image
    generation: the images answered) count work that tokens do not measure.
    """

    minute = models.DateTimeField()
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="usage_rollups")
    api_key = models.ForeignKey(ApiKey, null=True, on_delete=models.SET_NULL, related_name="usage_rollups")
    deployment_id = models.BigIntegerField(null=True)  # kept after the deployment is deleted
    deployment_name = models.CharField(max_length=63, blank=True)
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    latency_ms_sum = models.PositiveBigIntegerField(default=0)
    batch = models.BooleanField(default=False)
    inferences = models.PositiveBigIntegerField(default=0)
    images = models.PositiveBigIntegerField(default=0)

    unscoped_objects = models.Manager()
    objects = TenantScopedManager()

    class Meta:
        default_manager_name = "unscoped_objects"
        constraints = [
            models.UniqueConstraint(
                fields=["minute", "tenant", "api_key", "deployment_id", "batch"],
                name="usage_rollup_unique_bucket",
                nulls_distinct=False,
            )
        ]
        indexes = [models.Index(fields=["tenant", "minute"], name="usage_tenant_minute")]

    def __str__(self) -> str:
        return f"usage {self.tenant_id} {self.minute:%Y-%m-%d %H:%M}"


class UsageEventSeen(models.Model):
    """Request ids already rolled up, so a redelivered usage event is never counted twice."""

    request_id = models.CharField(max_length=64, primary_key=True)
    seen_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return self.request_id
