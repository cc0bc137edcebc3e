"""Deployment routes, included by ``controlplane/urls.py`` under ``api/v1/``.

``tenants/{tenant}/deployments/`` (+ ``{name}/``, ``{name}/scale/``, ``{name}/traffic/``),
``tenants/{tenant}/deployments/{deployment_name}/revisions/`` (+ ``{number}/``) and ``.../events/``;
``tenants/{tenant}/secrets/`` (+ ``{name}/``).
"""

from __future__ import annotations

from django.urls import URLPattern, URLResolver
from rest_framework.routers import SimpleRouter

from deployments.api import slo as slo_api
from deployments.api.manifests import urlpatterns as manifests_urlpatterns
from deployments.api.secrets import SecretViewSet
from deployments.api.views import DeploymentEventViewSet, DeploymentViewSet, RevisionViewSet

_TENANT = r"tenants/(?P<tenant>[^/]+)"
_DEPLOYMENT = _TENANT + r"/deployments/(?P<deployment_name>[^/]+)"

router = SimpleRouter()
router.register(_TENANT + r"/deployments", DeploymentViewSet, basename="deployment")
router.register(_TENANT + r"/secrets", SecretViewSet, basename="secret")
router.register(_DEPLOYMENT + r"/revisions", RevisionViewSet, basename="deployment-revision")
router.register(_DEPLOYMENT + r"/events", DeploymentEventViewSet, basename="deployment-event")
slo_api.register(router, _DEPLOYMENT)  # .../slo/ samples and .../rollout/ canary control

urlpatterns: list[URLPattern | URLResolver] = list(router.urls)
urlpatterns += manifests_urlpatterns  # GET .../deployments/{name}/manifests/ (preview of the Kubernetes objects)
