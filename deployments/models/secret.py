"""A tenant's secrets: write-only values its deployments use (model tokens, registry logins, upstream API keys).

A value is never stored in clear: ``sealed_value`` is the value sealed with the platform's at-rest key
(``deployments.secrets``), and no API, console page or log ever shows it. Rotating a value bumps ``version``, which
is what rolls the replicas that use it. The name is immutable: it is the key of the Kubernetes Secret and the
context the value is sealed under.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

from controlplane.scoping import TenantScopedManager
from tenants.models import Tenant

SECRET_NAME_MAX_LENGTH = 63
# A DNS-1123 label: valid as a Kubernetes Secret key and readable as a name in an ``env`` reference.
SECRET_NAME_VALIDATOR = RegexValidator(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z",
    "lower-case letters, digits and '-', starting and ending with a letter or digit",
    code="invalid_secret_name",
)
# A registry host as image references name it: a DNS name or address with an optional port, no scheme or path.
REGISTRY_SERVER_VALIDATOR = RegexValidator(
    r"^(?=.{1,253}(?::\d{1,5})?\Z)[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(?::\d{1,5})?\Z",
    "a registry host such as ghcr.io or registry.example.com:5000 (no scheme, no path)",
    code="invalid_registry_server",
)


class TenantSecret(models.Model):
    class Kind(models.TextChoices):
        # Referenced by name from a deployment's ``secret_env``, or as an external deployment's upstream API key.
        GENERIC = "generic"
        # A registry login: every model pod of the tenant may pull images with it.
        REGISTRY = "registry"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="secrets")
    name = models.CharField(max_length=SECRET_NAME_MAX_LENGTH, validators=[SECRET_NAME_VALIDATOR])
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.GENERIC)
    sealed_value = models.TextField(editable=False)
    version = models.PositiveIntegerField(default=1, editable=False)
    registry_server = models.CharField(max_length=260, blank=True, validators=[REGISTRY_SERVER_VALIDATOR])
    registry_username = models.CharField(max_length=255, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    unscoped_objects = models.Manager()
    objects: TenantScopedManager[TenantSecret] = TenantScopedManager()  # type: ignore[assignment]  # django-stubs types managers outside models.py as Self

    class Meta:
        default_manager_name = "unscoped_objects"
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="secret_unique_name_per_tenant"),
            models.CheckConstraint(
                condition=models.Q(kind="generic") | ~models.Q(registry_server=""),
                name="secret_registry_has_server",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id}/{self.name}"
