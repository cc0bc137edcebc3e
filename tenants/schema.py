"""OpenAPI description of the API-key authentication, so drf-spectacular documents ``Bearer <api key>``."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "fd_<env>_<key id>_<secret>",
            "description": "An API key with the 'read' (viewer) or 'manage' (admin) scope.",
        }
