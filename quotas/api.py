"""REST endpoint for a tenant's quota: ``/api/v1/tenants/{tenant}/quota/`` (tenant members read, staff write)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.api import TenantScopedViewSet
from controlplane.permissions import IsAuthenticatedPrincipal
from quotas.models import QUOTA_FIELDS, Quota
from tenants import services
from tenants.models import Role

# The body lists the quota's fields in the model's order.
_BODY_FIELDS = [field.name for field in Quota._meta.concrete_fields if field.name in QUOTA_FIELDS]


class QuotaSerializer(serializers.ModelSerializer[Quota]):
    """A quota; ``null`` for a rate limit or budget means unlimited. The tenant comes from the URL."""

    tenant = serializers.CharField(source="tenant.slug", read_only=True)

    class Meta:
        model = Quota
        fields = ["tenant", *_BODY_FIELDS, "updated_at"]
        read_only_fields = ["tenant", "updated_at"]


@extend_schema_view(
    retrieve=extend_schema(summary="The tenant's quota"),
    update=extend_schema(summary="Replace the tenant's quota (staff)"),
    partial_update=extend_schema(summary="Change the tenant's quota (staff)"),
)
class QuotaViewSet(TenantScopedViewSet):
    """The tenant's single quota row; the tenant is resolved by the chokepoint, so there is no lookup id."""

    model = Quota
    permission_classes = [IsAuthenticatedPrincipal]
    queryset = Quota.unscoped_objects.none()
    serializer_class = QuotaSerializer
    read_role = Role.VIEWER
    write_role = Role.OWNER
    staff_actions = frozenset({"update", "partial_update"})

    def _quota(self) -> Quota:
        quota = self.get_queryset().select_related("tenant").first()
        if quota is None:  # tenants made before quotas existed: give them the defaults on first sight
            quota, _ = Quota.unscoped_objects.get_or_create(tenant=self.tenant)
        return quota

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(self.get_serializer(self._quota()).data)

    def _write(self, request: Request, *, partial: bool) -> Response:
        quota = self._quota()
        serializer = self.get_serializer(quota, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        changes = dict(serializer.validated_data)
        services.update_quota(quota, changes=changes, actor=self.principal, request_id=self.request_id)
        return Response(self.get_serializer(quota).data)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._write(request, partial=False)

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._write(request, partial=True)
