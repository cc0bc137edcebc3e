"""SLO samples, SLO state and canary rollouts of a deployment."""

from __future__ import annotations

from typing import Any

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from controlplane.scoping import TenantScopedManager
from tenants.models import Tenant


class SloSample(models.Model):
    """Load and latency of one deployment (``revision`` null: all revisions together) over one interval.

    ``buckets`` keeps the cumulative latency histogram (``{"le_100": n, ..., "le_inf": n}``) and the time-to-first-token
    one (``{"ttft_le_100": n, ...}``) so longer ranges and comparisons merge histograms exactly instead of averaging
    percentiles.
    """

    class Resolution(models.TextChoices):
        TEN_SECONDS = "10s"
        FIVE_MINUTES = "5m"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    deployment = models.ForeignKey("deployments.ModelDeployment", on_delete=models.CASCADE, related_name="+")
    revision = models.ForeignKey(
        "deployments.Revision", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    resolution = models.CharField(max_length=4, choices=Resolution.choices, default=Resolution.TEN_SECONDS)
    interval_start = models.DateTimeField()
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    latency_ms_sum = models.PositiveBigIntegerField(default=0)
    p50_ms = models.FloatField(null=True, blank=True)
    p95_ms = models.FloatField(null=True, blank=True)
    p99_ms = models.FloatField(null=True, blank=True)
    # Time to first token (streams): a mean from the sum and count, and a p95 from the ``ttft_le_*`` buckets.
    ttft_ms_sum = models.PositiveBigIntegerField(default=0)
    ttft_count = models.PositiveIntegerField(default=0)
    ttft_p95_ms = models.FloatField(null=True, blank=True)
    buckets = models.JSONField(default=dict, blank=True)
    in_flight = models.FloatField(default=0)
    replicas_ready = models.PositiveIntegerField(default=0)
    replicas_desired = models.PositiveIntegerField(default=0)

    unscoped_objects = models.Manager()
    objects: TenantScopedManager[SloSample] = TenantScopedManager()  # type: ignore[assignment]  # django-stubs types managers outside models.py as Self

    class Meta:
        default_manager_name = "unscoped_objects"
        ordering = ["interval_start"]
        constraints = [
            # One row per interval: a collector tick that runs twice upserts the same row.
            models.UniqueConstraint(
                fields=["deployment", "revision", "resolution", "interval_start"],
                name="slosample_unique_interval",
                nulls_distinct=False,
            ),
        ]
        indexes = [
            models.Index(fields=["deployment", "resolution", "interval_start"], name="slosample_dep_res_start"),
            models.Index(fields=["resolution", "interval_start"], name="slosample_res_start"),
        ]

    def __str__(self) -> str:
        return f"{self.deployment_id}/{self.revision_id or '*'} {self.resolution} {self.interval_start:%H:%M:%S}"

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def ttft_avg_ms(self) -> float | None:
        return self.ttft_ms_sum / self.ttft_count if self.ttft_count else None


class SloStatus(models.Model):
    """Whether a deployment's SLO is breached now; flipped by a conditional UPDATE so each transition is seen once."""

    deployment = models.OneToOneField(
        "deployments.ModelDeployment", on_delete=models.CASCADE, related_name="slo_status", primary_key=True
    )
    breached = models.BooleanField(default=False)
    reason = models.TextField(blank=True)
    changed_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.deployment_id}: {'breached' if self.breached else 'ok'}"


def default_steps() -> list[int]:
    return [10, 25, 50, 100]


class Rollout(models.Model):
    """A metric-gated canary: ``revision`` takes traffic in ``steps`` while ``stable_revision`` keeps the rest."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        ROLLED_BACK = "rolled_back"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    deployment = models.ForeignKey("deployments.ModelDeployment", on_delete=models.CASCADE, related_name="rollouts")
    revision = models.ForeignKey("deployments.Revision", on_delete=models.CASCADE, related_name="+")
    stable_revision = models.ForeignKey("deployments.Revision", on_delete=models.CASCADE, related_name="+")
    steps = models.JSONField(default=default_steps)
    step_index = models.PositiveSmallIntegerField(default=0)
    pause_s = models.PositiveIntegerField(default=30, validators=[MaxValueValidator(86_400)])
    max_error_rate_delta = models.FloatField(default=0.05, validators=[MinValueValidator(0), MaxValueValidator(1)])
    max_p95_ratio = models.FloatField(default=1.5, validators=[MinValueValidator(1)])
    # A step is judged only once the canary has served this many requests in its window.
    min_requests = models.PositiveIntegerField(default=10)
    paused = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    reason = models.TextField(blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    step_started_at = models.DateTimeField(default=timezone.now)
    # When the canary was first seen ready at the current step; the step's pause and window start here.
    step_ready_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    unscoped_objects = models.Manager()
    objects: TenantScopedManager[Rollout] = TenantScopedManager()  # type: ignore[assignment]  # django-stubs types managers outside models.py as Self

    class Meta:
        default_manager_name = "unscoped_objects"
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["deployment"], condition=Q(status="running"), name="rollout_one_running_per_deployment"
            ),
        ]

    def __str__(self) -> str:
        return f"rollout of {self.deployment_id} to {self.revision_id}: {self.status}"

    @property
    def current_weight(self) -> int:
        return int(self.steps[min(self.step_index, len(self.steps) - 1)])

    def as_dict(self) -> dict[str, Any]:
        """The API's view of the rollout."""
        return {
            "revision": f"r{self.revision.number}",
            "stable_revision": f"r{self.stable_revision.number}",
            "status": self.status,
            "paused": self.paused,
            "steps": list(self.steps),
            "step_index": self.step_index,
            "weight": self.current_weight,
            "pause_s": self.pause_s,
            "max_error_rate_delta": self.max_error_rate_delta,
            "max_p95_ratio": self.max_p95_ratio,
            "min_requests": self.min_requests,
            "reason": self.reason,
            "started_at": self.started_at.isoformat(),
            "step_started_at": self.step_started_at.isoformat(),
            "step_ready_at": self.step_ready_at.isoformat() if self.step_ready_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }
