"""REST endpoints for tenants, members, API keys and audit events (``/api/v1``).

Everything under ``/api/v1/tenants/{tenant}/`` is a ``TenantScopedViewSet`` (the one scoping chokepoint).
The only exception is ``TenantListViewSet`` (``/api/v1/tenants/``): listing and creating tenants has no tenant in
the URL, so it scopes by the principal itself — staff see all, users their memberships, a key its own tenant.
Views validate input and call ``tenants.services``; the console calls the same functions.
"""

from __future__ import annotations

import datetime
from typing import Any

import django_filters
from django import forms
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.viewsets import GenericViewSet

from controlplane.access import listed_tenants, staff_principal
from controlplane.api import TenantScopedViewSet
from controlplane.idempotency import IdempotentMixin
from controlplane.permissions import IsAuthenticatedPrincipal
from tenants import schema as _schema  # noqa: F401 - registers the Bearer key scheme for the OpenAPI schema
from tenants import services
from tenants.models import ApiKey, AuditEvent, Membership, Role, Scope, Tenant
from tenants.serializers import (
    ApiKeyCreatedSerializer,
    ApiKeyCreateSerializer,
    ApiKeySerializer,
    ApiKeyUpdateSerializer,
    AuditEventSerializer,
    MembershipCreateSerializer,
    MembershipSerializer,
    MembershipUpdateSerializer,
    TenantCreateSerializer,
    TenantSerializer,
    TenantUpdateSerializer,
)

# ---------------------------------------------------------------- /api/v1/tenants/


class TenantFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Tenant.Status.choices)

    class Meta:
        model = Tenant
        fields = ["status"]


@extend_schema_view(
    list=extend_schema(summary="Tenants the caller can see", responses=TenantSerializer(many=True)),
    create=extend_schema(
        summary="Create a tenant (staff)", request=TenantCreateSerializer, responses={201: TenantSerializer}
    ),
)
class TenantListViewSet(IdempotentMixin, mixins.ListModelMixin, GenericViewSet[Tenant]):
    """``GET``/``POST /api/v1/tenants/``: the one list outside the chokepoint, scoped by the principal."""

    serializer_class = TenantSerializer
    permission_classes = [IsAuthenticatedPrincipal]
    queryset = Tenant.objects.none()
    filterset_class = TenantFilter
    ordering_fields = ["slug", "name", "created_at"]
    ordering = ["slug"]

    def _roles(self) -> dict[int, str]:
        """The caller's role per listed tenant (``controlplane.access`` decides; staff own every tenant)."""
        key = self.request.auth if isinstance(self.request.auth, ApiKey) else None
        roles = listed_tenants(self.request.user, key)
        if roles is None:
            return {pk: Role.OWNER for pk in Tenant.objects.values_list("pk", flat=True)}
        return roles

    def get_queryset(self) -> QuerySet[Tenant]:
        key = self.request.auth if isinstance(self.request.auth, ApiKey) else None
        roles = listed_tenants(self.request.user, key)
        return Tenant.objects.all() if roles is None else Tenant.objects.filter(pk__in=list(roles))

    def get_serializer_context(self) -> dict[str, Any]:
        context = dict(super().get_serializer_context())
        if not getattr(self, "swagger_fake_view", False) and (
            self.request.user.is_authenticated or isinstance(self.request.auth, ApiKey)
        ):
            context["roles"] = self._roles()
        return context

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if isinstance(request.auth, ApiKey) or not request.user.is_staff:
            raise exceptions.PermissionDenied("only platform staff may create tenants")
        serializer = TenantCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        tenant = services.create_tenant(
            slug=data["slug"],
            name=data["name"],
            owner=data.get("owner"),
            actor=staff_principal(request.user.pk),
            request_id=str(getattr(request, "request_id", "") or ""),
        )
        body = TenantSerializer(tenant, context={"roles": {tenant.pk: Role.OWNER}}).data
        return Response(body, status=status.HTTP_201_CREATED)


# ---------------------------------------------------------------- /api/v1/tenants/{tenant}/


@extend_schema_view(
    retrieve=extend_schema(summary="A tenant", responses=TenantSerializer),
    partial_update=extend_schema(
        summary="Rename a tenant (admin)", request=TenantUpdateSerializer, responses=TenantSerializer
    ),
    destroy=extend_schema(
        summary="Delete a tenant without deployments (staff)",
        responses={204: None, 409: OpenApiResponse(description="the tenant still has deployments")},
    ),
    suspend=extend_schema(summary="Suspend a tenant (staff)", request=None, responses=TenantSerializer),
    resume=extend_schema(summary="Resume a suspended tenant (staff)", request=None, responses=TenantSerializer),
)
class TenantDetailViewSet(IdempotentMixin, TenantScopedViewSet):
    """The tenant named in the URL; resolved (and access-checked) by the chokepoint, so no lookup here."""

    model = Tenant
    permission_classes = [IsAuthenticatedPrincipal]
    queryset = Tenant.objects.none()
    serializer_class = TenantSerializer
    action_roles = {"partial_update": Role.ADMIN}
    staff_actions = frozenset({"destroy", "suspend", "resume"})

    def _tenant_response(self) -> Response:
        return Response(self.get_serializer(self.tenant).data)

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._tenant_response()

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = TenantUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.update_tenant(
            self.tenant, name=serializer.validated_data["name"], actor=self.principal, request_id=self.request_id
        )
        return self._tenant_response()

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        services.delete_tenant(self.tenant, actor=self.principal, request_id=self.request_id)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @action(detail=False, methods=["post"])
    def suspend(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        services.suspend_tenant(self.tenant, actor=self.principal, request_id=self.request_id)
        return self._tenant_response()

    @action(detail=False, methods=["post"])
    def resume(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        services.resume_tenant(self.tenant, actor=self.principal, request_id=self.request_id)
        return self._tenant_response()


# ---------------------------------------------------------------- members


class MembershipFilter(django_filters.FilterSet):
    role = django_filters.ChoiceFilter(choices=Role.choices)

    class Meta:
        model = Membership
        fields = ["role"]


@extend_schema_view(
    list=extend_schema(summary="Members of the tenant"),
    retrieve=extend_schema(summary="One member"),
    create=extend_schema(
        summary="Add a member (admin; owner role: owner)",
        request=MembershipCreateSerializer,
        responses={201: MembershipSerializer},
    ),
    partial_update=extend_schema(
        summary="Change a member's role (admin; owners: owner)",
        request=MembershipUpdateSerializer,
        responses=MembershipSerializer,
    ),
    destroy=extend_schema(summary="Remove a member (admin; owners: owner; never the last owner)"),
)
class MemberViewSet(
    IdempotentMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    TenantScopedViewSet,
):
    model = Membership
    permission_classes = [IsAuthenticatedPrincipal]
    queryset = Membership.unscoped_objects.none()
    serializer_class = MembershipSerializer
    lookup_field = "user__username"
    lookup_url_kwarg = "username"
    read_role = Role.VIEWER
    write_role = Role.ADMIN
    filterset_class = MembershipFilter
    ordering_fields = ["user__username", "role", "created_at"]
    ordering = ["user__username"]

    def scope_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.select_related("user", "tenant")

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = MembershipCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        membership = services.add_member(
            self.tenant, user=data["username"], role=data["role"], actor=self.principal, request_id=self.request_id
        )
        return Response(MembershipSerializer(membership).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        membership = self.get_object()
        serializer = MembershipUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.change_role(
            membership, role=serializer.validated_data["role"], actor=self.principal, request_id=self.request_id
        )
        return Response(MembershipSerializer(membership).data)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        services.remove_member(self.get_object(), actor=self.principal, request_id=self.request_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


# ---------------------------------------------------------------- API keys


class ApiKeyFilter(django_filters.FilterSet):
    revoked = django_filters.BooleanFilter(field_name="revoked_at", lookup_expr="isnull", exclude=True)
    scope = django_filters.ChoiceFilter(
        choices=Scope.choices, field_name="scopes", lookup_expr="contains", method="filter_scope"
    )

    class Meta:
        model = ApiKey
        fields = ["revoked", "scope"]

    def filter_scope(self, queryset: QuerySet[ApiKey], name: str, value: str) -> QuerySet[ApiKey]:
        return queryset.filter(scopes__contains=[value])


@extend_schema_view(
    list=extend_schema(summary="API keys of the tenant (secrets are never shown)"),
    retrieve=extend_schema(summary="One API key (its secret is never shown)"),
    create=extend_schema(
        summary="Issue an API key (admin); the response holds the full key, shown this once",
        request=ApiKeyCreateSerializer,
        responses={201: ApiKeyCreatedSerializer},
    ),
    partial_update=extend_schema(
        summary="Rename a key or change its limits (admin)", request=ApiKeyUpdateSerializer, responses=ApiKeySerializer
    ),
    revoke=extend_schema(summary="Revoke an API key (admin)", request=None, responses=ApiKeySerializer),
)
class ApiKeyViewSet(
    IdempotentMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    TenantScopedViewSet,
):
    model = ApiKey
    permission_classes = [IsAuthenticatedPrincipal]
    queryset = ApiKey.unscoped_objects.none()
    serializer_class = ApiKeySerializer
    lookup_field = "key_id"
    idempotency_redacted_fields = frozenset({"key"})  # a replayed create answers "key": null
    read_role = Role.MEMBER
    write_role = Role.ADMIN
    filterset_class = ApiKeyFilter
    ordering_fields = ["created_at", "name", "last_used_at", "expires_at"]
    ordering = ["-created_at"]

    def scope_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.select_related("created_by", "tenant")

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = ApiKeyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = request.user if request.user.is_authenticated else None
        key, full_key = services.issue_key(
            self.tenant, created_by=user, actor=self.principal, request_id=self.request_id, **serializer.validated_data
        )
        body = ApiKeyCreatedSerializer(key).data
        body["key"] = full_key
        response = Response(body, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"  # the secret must not linger in caches
        return response

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = self.get_object()
        serializer = ApiKeyUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        services.update_key(
            key, changes=dict(serializer.validated_data), actor=self.principal, request_id=self.request_id
        )
        return Response(ApiKeySerializer(key).data)

    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = self.get_object()
        services.revoke_key(key, actor=self.principal, request_id=self.request_id)
        return Response(ApiKeySerializer(key).data)


# ---------------------------------------------------------------- audit events


class UtcIsoDateTimeField(django_filters.fields.IsoDateTimeField):
    """An ISO 8601 time, converted to UTC before it reaches Postgres, which refuses offsets beyond ±15:59 (Python
    parses up to ±23:59); a time that leaves the calendar once converted is refused like a malformed one."""

    def clean(self, value: Any) -> datetime.datetime | None:
        moment: datetime.datetime | None = super().clean(value)
        if moment is None:
            return None
        try:
            return moment.astimezone(datetime.UTC)
        except OverflowError:
            raise forms.ValidationError(
                "Enter a valid date/time within years 1 to 9999 in UTC.", code="invalid"
            ) from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


class AuditEventFilter(django_filters.FilterSet):
    action = django_filters.CharFilter()
    object_type = django_filters.CharFilter()
    object_id = django_filters.CharFilter()
    actor = django_filters.CharFilter(field_name="actor__username")
    actor_key = django_filters.CharFilter(field_name="actor_key__key_id")
    request_id = django_filters.CharFilter()
    since = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields = ["action", "object_type", "object_id", "actor", "actor_key", "request_id", "since", "until"]


@extend_schema_view(
    list=extend_schema(summary="Audit events of the tenant (admin)"),
    retrieve=extend_schema(summary="One audit event (admin)"),
)
class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    model = AuditEvent
    permission_classes = [IsAuthenticatedPrincipal]
    queryset = AuditEvent.unscoped_objects.none()
    serializer_class = AuditEventSerializer
    read_role = Role.ADMIN
    write_role = Role.OWNER  # no write actions exist; the event log is append-only through the services
    filterset_class = AuditEventFilter
    ordering_fields = ["created_at", "action"]
    ordering = ["-created_at", "-id"]

    def scope_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.select_related("actor", "actor_key")
