"""``GET /api/v1/tenants/{tenant}/deployments/{name}/manifests``: the YAML the reconciler would apply now."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from django.urls import re_path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request

from controlplane.api import TenantScopedViewSet
from deployments.backends import manifests
from deployments.models import ModelDeployment, Revision
from deployments.reconcile.engine import desired_spec
from tenants.models import Role


class DeploymentManifestsViewSet(TenantScopedViewSet):
    """Preview of a deployment's Kubernetes objects (tenant objects first), as multi-document YAML."""

    model = ModelDeployment
    lookup_field = "name"
    read_role = Role.VIEWER

    @extend_schema(
        summary="Preview the Kubernetes objects of a deployment",
        responses={200: OpenApiResponse(OpenApiTypes.STR, description="multi-document YAML")},
    )
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponse:
        deployment = self.get_object()
        revisions = list(Revision.objects.for_tenant(self.tenant).filter(deployment=deployment).order_by("number"))
        spec = desired_spec(deployment, revisions)
        kube = manifests.KubeSettings.from_env()
        # The tenant's Secrets are shown with their keys, never their values.
        objects = manifests.redacted(manifests.tenant_objects(spec.tenant, kube)) + manifests.deployment_objects(
            spec, kube
        )
        return HttpResponse(manifests.to_yaml(objects), content_type="application/yaml; charset=utf-8")


# Included by deployments/api/urls.py (under api/v1/); the same lookup kwargs as the deployments routes.
urlpatterns = [
    re_path(
        r"^tenants/(?P<tenant>[^/]+)/deployments/(?P<name>[^/]+)/manifests/?$",
        DeploymentManifestsViewSet.as_view({"get": "retrieve"}),
        name="deployment-manifests",
    )
]
