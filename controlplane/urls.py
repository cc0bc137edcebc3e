"""URL map: REST API under /api/v1, OpenAPI schema and docs, admin, console."""

from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

# Tenant-owned models fail closed on ``objects`` (controlplane/scoping.py); schema generation builds empty
# querysets for filter introspection, so it uses each model's default manager instead.
SCHEMA_SETTINGS = {"DEFAULT_QUERY_MANAGER": "_default_manager"}


def api_route_not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    """An unknown path under /api/ answers in the API's error shape, not with the console's HTML 404 page."""
    from controlplane.errors import error_body

    return JsonResponse(error_body(404, "not_found", f"no API route {request.path!r}"), status=404)


urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(custom_settings=SCHEMA_SETTINGS), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/v1/", include("tenants.urls")),
    path("api/v1/", include("quotas.urls")),
    path("api/v1/", include("deployments.api.urls")),
    path("api/v1/", include("batches.api_urls")),
    re_path(r"^api/(?P<rest>.*)$", api_route_not_found),
    # Only the gateway calls these (the internal token), on behalf of a tenant's inference key.
    path("internal/openai/", include("batches.urls")),
    path("", include("controlplane.console_urls")),
]
