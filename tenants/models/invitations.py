"""Invitations: an admin invites someone by email; the link, opened while signed in, makes them a member.

Only the SHA-256 of the token is stored (like API keys, the link is shown once, to the admin who made it).
Re-exported by ``tenants.models``, so Django registers it under the ``tenants`` app.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from controlplane.scoping import TenantScopedManager

__all__ = ["INVITATION_TTL", "Invitation"]

INVITATION_TTL = timedelta(days=7)


def _expiry() -> datetime:
    return timezone.now() + INVITATION_TTL


class Invitation(models.Model):
    """An open invitation to join a tenant with a role; accepted (or revoked) once."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, default="member")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(default=_expiry)
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    unscoped_objects = models.Manager()
    objects = TenantScopedManager()

    class Meta:
        app_label = "tenants"
        default_manager_name = "unscoped_objects"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="invitation_tenant_created")]

    def __str__(self) -> str:
        return f"invitation of {self.email} to {self.tenant_id} as {self.role}"

    @staticmethod
    def new_token() -> tuple[str, str]:
        """A fresh (token, its hash). The token goes in the link; only the hash is stored."""
        token = secrets.token_urlsafe(32)
        return token, Invitation.hash_token(token)

    @staticmethod
    def hash_token(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    @property
    def is_open(self) -> bool:
        return self.accepted_at is None and self.revoked_at is None and self.expires_at > timezone.now()
