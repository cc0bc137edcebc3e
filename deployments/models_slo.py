"""SLO samples, SLO state, canary rollouts and per-tenant notification settings (issue 6).

Kept apart from ``deployments/models.py`` so the scaling/SLO work has its own module; imported at the bottom of
``models.py`` so Django registers these models under the ``deployments`` app.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.core.validators import MaxValueValidator, MinValueValidator, URLValidator
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from controlplane.audit import record_audit
from controlplane.scoping import TenantScopedManager
from tenants.models import Tenant

__all__ = ["Rollout", "SloSample", "SloStatus", "TenantSettings", "new_webhook_secret"]


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


class TenantSettings(models.Model):
    """Per-tenant notification settings. The webhook gets SLO breaches and recoveries (public http(s) only)."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="notification_settings")
    webhook_url = models.URLField(max_length=500, blank=True, validators=[URLValidator(schemes=["http", "https"])])
    # HMAC-SHA256 of the body with this secret goes in ``X-Frontdoor-Signature`` when set.
    webhook_secret = models.CharField(max_length=128, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    unscoped_objects = models.Manager()
    objects: TenantScopedManager[TenantSettings] = TenantScopedManager()  # type: ignore[assignment]  # django-stubs types managers outside models.py as Self

    class Meta:
        default_manager_name = "unscoped_objects"
        verbose_name_plural = "tenant settings"

    def __str__(self) -> str:
        return f"settings of {self.tenant_id}"

    @classmethod
    def of(cls, tenant: Tenant) -> TenantSettings:
        """The tenant's settings, or an unsaved blank row when it has none (reading never writes)."""
        return cls.objects.for_tenant(tenant).first() or cls(tenant=tenant)

    @classmethod
    def _locked(cls, tenant: Tenant) -> TenantSettings:
        cls.unscoped_objects.get_or_create(tenant=tenant)
        # Lock the row: two first-time saves racing must not both hand out a (different) secret.
        return cls.unscoped_objects.select_for_update().get(tenant=tenant)

    @classmethod
    def set_webhook(cls, tenant: Tenant, url: str, *, actor: Any) -> tuple[TenantSettings, str | None]:
        """Set (or, with ``""``, clear) the webhook URL; the caller has checked it (``webhooks.check_webhook_url``).

        The first URL gets a new signing secret, returned here and nowhere else (the caller shows it once);
        clearing the URL drops the secret, so the next URL gets a fresh one. ``actor`` is what ``record_audit``
        takes (a request or a principal). Returns the row and the new secret, or None when none was made.
        """
        with transaction.atomic():
            row = cls._locked(tenant)
            new_secret: str | None = None
            changes: dict[str, Any] = {}
            if row.webhook_url != url:
                changes["webhook_url"] = [row.webhook_url, url]
                row.webhook_url = url
            if url and not row.webhook_secret:
                new_secret = row.webhook_secret = new_webhook_secret()
                changes["webhook_secret_generated"] = True
            elif not url and row.webhook_secret:
                row.webhook_secret = ""
                changes["webhook_secret_dropped"] = True
            if changes:
                row.save()
                record_audit(actor, tenant, "settings.update", row, changes)
        return row, new_secret

    @classmethod
    def rotate_webhook_secret(cls, tenant: Tenant, *, actor: Any) -> tuple[TenantSettings, str | None]:
        """Replace the signing secret; the new one is returned once. None (and no change) when no webhook is set."""
        with transaction.atomic():
            row = cls._locked(tenant)
            if not row.webhook_url:
                return row, None
            row.webhook_secret = new_webhook_secret()
            row.save(update_fields=["webhook_secret", "updated_at"])
            record_audit(actor, tenant, "settings.rotate_webhook_secret", row, {"webhook_secret_rotated": True})
        return row, row.webhook_secret


def new_webhook_secret() -> str:
    """A signing secret for ``X-Frontdoor-Signature`` (256 random bits)."""
    return "whsec_" + secrets.token_urlsafe(32)


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
