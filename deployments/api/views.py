"""REST endpoints for deployments, under ``/api/v1/tenants/{tenant}/deployments/``.

Views parse and validate input, then call ``deployments.services`` (which the console calls too). Scoping and
roles come from ``TenantScopedViewSet``: viewers read, members change; another tenant's deployment is a 404.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.api import TenantScopedViewSet
from controlplane.idempotency import IdempotentMixin
from controlplane.permissions import IsAuthenticatedPrincipal
from deployments import services
from deployments.api.filters import DeploymentFilter
from deployments.api.serializers import (
    LISTED_REVISIONS,
    DeploymentEventSerializer,
    DeploymentSerializer,
    RevisionSerializer,
    ScaleSerializer,
    TrafficSerializer,
)
from deployments.models import DeploymentEvent, ModelDeployment, Revision

TENANT_PARAM = OpenApiParameter("tenant", OpenApiTypes.STR, OpenApiParameter.PATH, description="tenant slug")
NAME_PARAM = OpenApiParameter("name", OpenApiTypes.STR, OpenApiParameter.PATH, description="deployment name")
DEPLOYMENT_PARAM = OpenApiParameter(
    "deployment_name", OpenApiTypes.STR, OpenApiParameter.PATH, description="deployment name"
)
NUMBER_PARAM = OpenApiParameter("number", OpenApiTypes.INT, OpenApiParameter.PATH, description="revision number")
_QUOTA_422 = OpenApiResponse(description="quota_exceeded: the message names the quota, the ask and what is left")
_DELETING_409 = OpenApiResponse(description="the deployment is being deleted, or a concurrent change conflicted")


@extend_schema_view(
    list=extend_schema(summary="List deployments", parameters=[TENANT_PARAM]),
    create=extend_schema(
        summary="Create a deployment",
        parameters=[TENANT_PARAM],
        responses={201: DeploymentSerializer, 409: _DELETING_409, 422: _QUOTA_422},
    ),
    retrieve=extend_schema(summary="Get a deployment", parameters=[TENANT_PARAM, NAME_PARAM]),
    partial_update=extend_schema(
        summary="Change a deployment (a spec change makes a new revision)",
        parameters=[TENANT_PARAM, NAME_PARAM],
        responses={200: DeploymentSerializer, 409: _DELETING_409, 422: _QUOTA_422},
    ),
    destroy=extend_schema(
        summary="Delete a deployment (asynchronous: marked deleting, removed once its replicas are gone)",
        parameters=[TENANT_PARAM, NAME_PARAM],
        request=None,
        responses={202: DeploymentSerializer},
    ),
    scale=extend_schema(
        summary="Set replica bounds",
        parameters=[TENANT_PARAM, NAME_PARAM],
        request=ScaleSerializer,
        responses={200: DeploymentSerializer, 409: _DELETING_409, 422: _QUOTA_422},
    ),
    traffic=extend_schema(
        summary="Split traffic across revisions (weights sum to 100)",
        parameters=[TENANT_PARAM, NAME_PARAM],
        request=TrafficSerializer,
        responses={200: DeploymentSerializer, 409: _DELETING_409},
    ),
)
class DeploymentViewSet(IdempotentMixin, TenantScopedViewSet):
    """Model deployments of one tenant, looked up by name. POSTs honour ``Idempotency-Key``."""

    permission_classes = [IsAuthenticatedPrincipal]  # API keys too; roles and scopes are checked by the base
    model = ModelDeployment
    # Read only by the schema generator (which has no tenant); requests go through the scoped get_queryset().
    queryset = ModelDeployment.unscoped_objects.none()
    serializer_class = DeploymentSerializer
    lookup_field = "name"
    filterset_class = DeploymentFilter
    ordering_fields = ["name", "created_at", "updated_at", "status", "runtime", "max_replicas", "ready_replicas"]
    ordering = ["name"]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def scope_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        # The answer names each revision's number and weight only: their specs, endpoints and statuses (JSON Postgres
        # would send and Python decode, for every revision in the history) stay in the database.
        listed = Revision.unscoped_objects.only("id", "deployment_id", "number", "weight")
        return queryset.select_related("tenant").prefetch_related(
            Prefetch("revisions", listed, to_attr=LISTED_REVISIONS)
        )

    def _fresh(self) -> ModelDeployment:
        """The deployment as stored now, with its revisions (a service call may have changed both)."""
        return self.get_object()

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        serializer = self.get_serializer(page if page is not None else queryset, many=True)
        return self.get_paginated_response(serializer.data) if page is not None else Response(serializer.data)

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        deployment = services.create_deployment(self.tenant, data, actor=self.principal, request_id=self.request_id)
        self.kwargs[self.lookup_field] = deployment.name
        return Response(self.get_serializer(self._fresh()).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        deployment = self.get_object()
        serializer = self.get_serializer(deployment, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        rollout = data.pop("rollout", None)
        services.update_deployment(
            deployment,
            data,
            canary_weight=rollout["canary_weight"] if rollout else None,
            actor=self.principal,
            request_id=self.request_id,
        )
        return Response(self.get_serializer(self._fresh()).data)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        deleting = services.delete_deployment(self.get_object(), actor=self.principal, request_id=self.request_id)
        # Answer with the state just committed: a fast reconciler may already have removed the row, and reading it
        # again would turn an accepted delete into a 404.
        return Response(self.get_serializer(deleting).data, status=status.HTTP_202_ACCEPTED)

    @action(detail=True, methods=["post"])
    def scale(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        deployment = self.get_object()
        serializer = ScaleSerializer(
            data=request.data, context={**self.get_serializer_context(), "deployment": deployment}
        )
        serializer.is_valid(raise_exception=True)
        services.scale_deployment(
            deployment, **serializer.validated_data, actor=self.principal, request_id=self.request_id
        )
        return Response(self.get_serializer(self._fresh()).data)

    @action(detail=True, methods=["post"])
    def traffic(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        deployment = self.get_object()
        serializer = TrafficSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        services.set_traffic(
            deployment, serializer.validated_data["weights"], actor=self.principal, request_id=self.request_id
        )
        return Response(self.get_serializer(self._fresh()).data)


class DeploymentChildViewSet(TenantScopedViewSet):
    """Base for rows under one deployment (``.../deployments/{deployment_name}/...``): the deployment must exist."""

    permission_classes = [IsAuthenticatedPrincipal]
    deployment: ModelDeployment

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # tenant + role first: an outsider learns nothing
        deployment = (
            ModelDeployment.objects.for_tenant(self.tenant).filter(name=self.kwargs.get("deployment_name")).first()
        )
        if deployment is None:
            raise Http404("no such deployment")
        self.deployment = deployment

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        serializer = self.get_serializer(page if page is not None else queryset, many=True)
        return self.get_paginated_response(serializer.data) if page is not None else Response(serializer.data)


@extend_schema_view(
    list=extend_schema(summary="List a deployment's revisions", parameters=[TENANT_PARAM, DEPLOYMENT_PARAM]),
    retrieve=extend_schema(summary="Get one revision", parameters=[TENANT_PARAM, DEPLOYMENT_PARAM, NUMBER_PARAM]),
)
class RevisionViewSet(DeploymentChildViewSet):
    """A deployment's immutable revisions, by number."""

    model = Revision
    queryset = Revision.unscoped_objects.none()  # for the schema generator only, as above
    serializer_class = RevisionSerializer
    lookup_field = "number"
    lookup_value_regex = r"[0-9]+"
    filterset_fields: list[str] = []
    ordering_fields = ["number", "weight", "created_at"]
    ordering = ["number"]

    def scope_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(deployment=self.deployment)

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(self.get_serializer(self.get_object()).data)


@extend_schema_view(
    list=extend_schema(summary="List a deployment's events, newest first", parameters=[TENANT_PARAM, DEPLOYMENT_PARAM]),
)
class DeploymentEventViewSet(DeploymentChildViewSet):
    """What happened to a deployment: reconcile results, scaling, rollouts."""

    model = DeploymentEvent
    queryset = DeploymentEvent.unscoped_objects.none()  # for the schema generator only, as above
    serializer_class = DeploymentEventSerializer
    filterset_fields = ["kind", "reason"]
    ordering_fields = ["created_at"]
    ordering = ["-created_at", "-id"]

    def scope_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(deployment=self.deployment)
