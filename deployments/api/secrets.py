"""REST endpoints for a tenant's secrets, under ``/api/v1/tenants/{tenant}/secrets/``.

Values are write-only: ``POST`` and ``PATCH``/``PUT`` take one, no response ever carries one (only its ``version``,
which goes up on every change). Members and viewers see the names and who uses them; admins change them. Deleting
a secret a deployment uses is a 409 naming the deployments.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.api import TenantScopedViewSet
from controlplane.idempotency import IdempotentMixin
from controlplane.permissions import IsAuthenticatedPrincipal
from deployments import secrets
from deployments.models import TenantSecret
from deployments.models.secret import SECRET_NAME_MAX_LENGTH
from tenants.models import Role

_VALUE_HELP = "the value (write-only: never returned); for kind 'registry', the password or token"


class SecretSerializer(serializers.ModelSerializer[TenantSecret]):
    used_by = serializers.SerializerMethodField(help_text="live deployments that use the secret")

    class Meta:
        model = TenantSecret
        fields = [
            "name",
            "kind",
            "version",
            "registry_server",
            "registry_username",
            "used_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_used_by(self, obj: TenantSecret) -> list[str]:
        if obj.kind == TenantSecret.Kind.REGISTRY:
            return []
        users = self.context.get("users_by_secret")  # the list's, read once for the page
        return users.get(obj.name, []) if users is not None else secrets.users_of(obj)


class SecretCreateSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=SECRET_NAME_MAX_LENGTH)
    kind = serializers.ChoiceField(choices=TenantSecret.Kind.choices, default=TenantSecret.Kind.GENERIC)
    value = serializers.CharField(write_only=True, trim_whitespace=False, help_text=_VALUE_HELP)
    registry_server = serializers.CharField(max_length=260, required=False, default="", allow_blank=True)
    registry_username = serializers.CharField(max_length=255, required=False, default="", allow_blank=True)


class SecretUpdateSerializer(serializers.Serializer[Any]):
    value = serializers.CharField(write_only=True, trim_whitespace=False, help_text=_VALUE_HELP)  # optional in a PATCH
    registry_server = serializers.CharField(max_length=260, required=False, allow_blank=True)
    registry_username = serializers.CharField(max_length=255, required=False, allow_blank=True)


NAME_PARAM = OpenApiParameter("name", OpenApiTypes.STR, OpenApiParameter.PATH, description="secret name")
TENANT_PARAM = OpenApiParameter("tenant", OpenApiTypes.STR, OpenApiParameter.PATH, description="tenant slug")


@extend_schema_view(
    list=extend_schema(summary="List secrets (names, never values)", parameters=[TENANT_PARAM]),
    retrieve=extend_schema(summary="Get a secret (never its value)", parameters=[TENANT_PARAM, NAME_PARAM]),
    create=extend_schema(
        summary="Create a secret",
        parameters=[TENANT_PARAM],
        request=SecretCreateSerializer,
        responses={201: SecretSerializer},
    ),
    partial_update=extend_schema(
        summary="Rotate a secret's value (or change a registry login's host or user)",
        parameters=[TENANT_PARAM, NAME_PARAM],
        request=SecretUpdateSerializer,
        responses={200: SecretSerializer},
    ),
    update=extend_schema(
        summary="Rotate a secret's value",
        parameters=[TENANT_PARAM, NAME_PARAM],
        request=SecretUpdateSerializer,
        responses={200: SecretSerializer},
    ),
    destroy=extend_schema(
        summary="Delete a secret no deployment uses",
        parameters=[TENANT_PARAM, NAME_PARAM],
        responses={204: None, 409: OpenApiResponse(description="secret_in_use: the message names the deployments")},
    ),
)
class SecretViewSet(
    IdempotentMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    TenantScopedViewSet,
):
    model = TenantSecret
    permission_classes = [IsAuthenticatedPrincipal]
    queryset = TenantSecret.unscoped_objects.none()
    serializer_class = SecretSerializer
    lookup_field = "name"
    read_role = Role.VIEWER
    write_role = Role.ADMIN

    def scope_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.order_by("name")

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()
        if self.action == "list" and hasattr(self, "tenant"):
            context["users_by_secret"] = secrets.users_by_secret(self.tenant.pk)
        return context

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = SecretCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        secret = secrets.create_secret(
            self.tenant, actor=self.principal, request_id=self.request_id, **serializer.validated_data
        )
        return Response(SecretSerializer(secret).data, status=status.HTTP_201_CREATED)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        secret = self.get_object()
        serializer = SecretUpdateSerializer(data=request.data, partial=bool(kwargs.get("partial")))
        serializer.is_valid(raise_exception=True)
        secret = secrets.update_secret(
            secret, actor=self.principal, request_id=self.request_id, **serializer.validated_data
        )
        return Response(SecretSerializer(secret).data)

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self.update(request, *args, partial=True, **kwargs)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        secrets.delete_secret(self.get_object(), actor=self.principal, request_id=self.request_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
