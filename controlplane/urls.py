"""URL map: REST API under /api/v1, OpenAPI schema and docs, admin, console."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

# Tenant-owned models fail closed on ``objects`` (controlplane/scoping.py); schema generation builds empty
# querysets for filter introspection, so it uses each model's default manager instead.
SCHEMA_SETTINGS = {"DEFAULT_QUERY_MANAGER": "_default_manager"}

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(custom_settings=SCHEMA_SETTINGS), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/v1/", include("tenants.urls")),
    path("api/v1/", include("quotas.urls")),
    path("api/v1/", include("deployments.urls")),
    path("", include("controlplane.console_urls")),
]
