"""REST API authentication with ``Authorization: Bearer <api key>``; the key's scopes travel on ``request.auth``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from controlplane.contracts import keyformat
from tenants.models import ApiKey

# last_used_at is informational; writing it on every request would put a write on every API call.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiKeyAuthentication(BaseAuthentication):
    """Authenticates an API key; ``request.user`` is anonymous and ``request.auth`` is the ApiKey."""

    keyword = b"bearer"

    def authenticate(self, request: Request) -> tuple[Any, ApiKey] | None:
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <api key>'")
        raw = header[1].decode("latin-1")
        parsed = keyformat.parse_key(raw)
        if parsed is None:
            raise exceptions.AuthenticationFailed("invalid API key")
        key = ApiKey.unscoped_objects.select_related("tenant").filter(key_id=parsed.key_id).first()
        # A key is valid only with the environment segment it was issued with (``fd_test_...`` is not a live key);
        # one answer for a wrong secret and a wrong environment, so neither is confirmed to be right.
        if key is None or not key.verify(parsed.secret) or key.env != parsed.env:
            raise exceptions.AuthenticationFailed("invalid API key")
        if key.is_revoked:
            raise exceptions.AuthenticationFailed("this API key has been revoked")
        if key.is_expired:
            raise exceptions.AuthenticationFailed("this API key has expired")
        if not key.tenant.is_active:
            raise exceptions.PermissionDenied("this tenant is suspended")
        now = timezone.now()
        if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
            ApiKey.unscoped_objects.filter(pk=key.pk).update(last_used_at=now)
        return AnonymousUser(), key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="frontdoor"'
