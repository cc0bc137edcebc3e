"""Fail-closed managers for tenant-owned models: unscoped use must be explicit and greppable.

``Model.objects`` refuses to build a queryset until it is told whose rows it may see:
``Model.objects.for_tenant(tenant)``, or explicitly ``Model.objects.unscoped()`` (greppable; for staff views,
workers and admin). The plain ``unscoped_objects`` manager stays the model's default manager so Django's own
machinery (related managers, admin, cascades, validators) keeps working.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from django.db import models

_M = TypeVar("_M", bound=models.Model)


class UnscopedQueryError(RuntimeError):
    """Raised when tenant-owned rows are queried without naming a tenant (or ``.unscoped()``)."""


class TenantScopedManager(models.Manager[_M], Generic[_M]):
    """Manager whose querysets must be scoped; ``tenant_path`` is the lookup from the model to its Tenant."""

    def __init__(self, tenant_path: str = "tenant") -> None:
        super().__init__()
        self.tenant_path = tenant_path

    def deconstruct(self) -> Any:
        manager_as_path, path, qs_class, _args, kwargs = super().deconstruct()
        return manager_as_path, path, qs_class, (self.tenant_path,), kwargs

    def get_queryset(self) -> models.QuerySet[_M]:
        raise UnscopedQueryError(
            f"{self.model.__name__}.objects must be scoped: use .for_tenant(tenant) or, deliberately, .unscoped()"
        )

    def unscoped(self) -> models.QuerySet[_M]:
        """Every tenant's rows. Use only where the caller is staff, a worker, or itself scoped."""
        return super().get_queryset()

    def for_tenant(self, tenant: Any) -> models.QuerySet[_M]:
        """Only the rows of ``tenant`` (a Tenant or its primary key)."""
        return super().get_queryset().filter(**{self.tenant_path: tenant})
