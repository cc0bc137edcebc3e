"""Who may reach the REST API at all: a signed-in user or a valid API key.

DRF's ``IsAuthenticated`` looks only at ``request.user``; API-key authentication leaves the user anonymous and
puts the key on ``request.auth``, so keys need this class. What each principal may *do* is decided afterwards by
``TenantScopedViewSet`` (roles and scopes).
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from tenants.models import ApiKey


class IsAuthenticatedPrincipal(BasePermission):
    """A signed-in user, or a request authenticated by an ``ApiKey``."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if isinstance(request.auth, ApiKey):
            return True
        return bool(request.user and request.user.is_authenticated)
