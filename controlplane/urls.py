"""URL map: REST API under /api/v1, OpenAPI schema and docs, admin, console; the console's error pages."""

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect, HttpResponseServerError, JsonResponse
from django.shortcuts import render
from django.template import loader
from django.urls import include, is_valid_path, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from controlplane.console import nav_context

# Tenant-owned models fail closed on ``objects`` (controlplane/scoping.py); schema generation builds empty
# querysets for filter introspection, so it uses each model's default manager instead.
SCHEMA_SETTINGS = {"DEFAULT_QUERY_MANAGER": "_default_manager"}


def api_route_not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    """An unknown path under /api/ answers in the API's error shape, not with the console's HTML 404 page."""
    from controlplane.errors import error_body

    return JsonResponse(error_body(404, "not_found", f"no API route {request.path!r}"), status=404)


def console_page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """The console's 404 page (handler404 and unmatched paths): it never names a route, unlike Django's debug page."""
    return render(request, "404.html", nav_context(request), status=404)


def unmatched_path(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Any path no route matched, with DEBUG as without: the console's 404 page.

    Behind this catch-all every path resolves, so CommonMiddleware no longer adds a missing slash: it is added here,
    by its rules (GET and HEAD only, and only when the path with the slash is a real route).
    """
    if settings.APPEND_SLASH and request.method in {"GET", "HEAD"} and not request.path_info.endswith("/"):
        match = is_valid_path(f"{request.path_info}/")
        if match and match.func is not unmatched_path and getattr(match.func, "should_append_slash", True):
            return HttpResponsePermanentRedirect(request.get_full_path(force_append_slash=True))
    return console_page_not_found(request)


def console_permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    """The console's 403 page, with the refusal's reason (only people inside the tenant get a 403: others a 404)."""
    reason = str(exception) if isinstance(exception, PermissionDenied) else ""
    return render(request, "403.html", {"reason": reason, **nav_context(request)}, status=403)


def console_server_error(request: HttpRequest) -> HttpResponse:
    """A 500: JSON under /api/, else the console's page, rendered without a request context (no query, no context
    processor: whatever failed is not needed to say so)."""
    request_id = str(getattr(request, "request_id", "") or "")
    if request.path.startswith("/api/"):
        from controlplane.errors import error_body

        body = error_body(500, "server_error", f"the server failed; request id {request_id or 'unknown'}")
        return JsonResponse(body, status=500)
    return HttpResponseServerError(loader.get_template("500.html").render({"request_id": request_id}))


handler403 = console_permission_denied
handler404 = console_page_not_found
handler500 = console_server_error


urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(custom_settings=SCHEMA_SETTINGS), name="schema"),
    # Swagger UI and Redoc come from the project's static files (SPECTACULAR_SETTINGS, drf-spectacular-sidecar);
    # Redoc's page is ours only to leave out the web fonts the stock one loads from a third party.
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path(
        "api/redoc/",
        SpectacularRedocView.as_view(url_name="schema", template_name="api_docs/redoc.html"),
        name="api-redoc",
    ),
    path("api/v1/", include("tenants.urls")),
    path("api/v1/", include("quotas.urls")),
    path("api/v1/", include("deployments.api.urls")),
    path("api/v1/", include("batches.api_urls")),
    re_path(r"^api/(?P<rest>.*)$", api_route_not_found),
    # Only the gateway calls these (the internal token), on behalf of a tenant's inference key.
    path("internal/openai/", include("batches.urls")),
    path("", include("controlplane.console_urls")),
    # Last: whatever no route above matched (the /api/ catch-all keeps API misses in JSON).
    re_path(r"^(?P<rest>.*)$", unmatched_path),
]
