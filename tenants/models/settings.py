"""A tenant's notification settings: where SLO breaches and recoveries are sent."""

from __future__ import annotations

from django.core.validators import URLValidator
from django.db import models

from controlplane.scoping import TenantScopedManager
from tenants.models.tenant import Tenant


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
        # The table keeps the name it was created with when the model lived in the deployments app.
        db_table = "deployments_tenantsettings"
        default_manager_name = "unscoped_objects"
        verbose_name_plural = "tenant settings"

    def __str__(self) -> str:
        return f"settings of {self.tenant_id}"

    @classmethod
    def of(cls, tenant: Tenant) -> TenantSettings:
        """The tenant's settings, or an unsaved blank row when it has none (reading never writes)."""
        return cls.objects.for_tenant(tenant).first() or cls(tenant=tenant)
