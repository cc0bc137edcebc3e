"""Tenants, memberships, API keys, audit events and idempotency records."""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import MaxLengthValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from controlplane.contracts import keyformat
from controlplane.scoping import TenantScopedManager
from controlplane.signals import bulk_change
from controlplane.validators import dns1123_label


class Tenant(models.Model):
    """An organisation that owns deployments, keys and a quota. Its slug names its Kubernetes namespace."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"

    slug = models.CharField(max_length=40, unique=True, validators=[dns1123_label])
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class Role(models.TextChoices):
    """Roles in a tenant, weakest first; each role can do everything the ones before it can."""

    VIEWER = "viewer"
    MEMBER = "member"
    ADMIN = "admin"
    OWNER = "owner"


ROLE_RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


def role_at_least(role: str | None, required: str) -> bool:
    """True when ``role`` is ``required`` or stronger."""
    return role is not None and ROLE_RANK[Role(role)] >= ROLE_RANK[Role(required)]


class Membership(models.Model):
    """A user's role in one tenant."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    unscoped_objects = models.Manager()
    objects = TenantScopedManager()

    class Meta:
        default_manager_name = "unscoped_objects"
        ordering = ["tenant_id", "user_id"]
        constraints = [models.UniqueConstraint(fields=["tenant", "user"], name="membership_unique_user_per_tenant")]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.tenant_id}:{self.role}"


class Scope(models.TextChoices):
    INFERENCE = "inference"
    MANAGE = "manage"
    READ = "read"


KEY_NAME_MAX_LENGTH = 100


class ApiKey(models.Model):
    """An API key. Only its public id and the HMAC of its secret are stored; the full key is shown once.

    Its name is unique among the tenant's unrevoked keys, so a person can tell their keys apart (and a form sent
    twice cannot make a second key of the same name); a revoked key keeps its name, which a new key may take again.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=KEY_NAME_MAX_LENGTH)
    key_id = models.CharField(max_length=keyformat.KEY_ID_LENGTH, unique=True, editable=False)
    env = models.CharField(max_length=8, default="live", editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    scopes = ArrayField(
        models.CharField(max_length=16, choices=Scope.choices), validators=[MaxLengthValidator(3)], default=list
    )
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    max_concurrent_requests = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    # The key's own per-minute limits for its batch lines (batch traffic has windows of its own); null: the tenant's.
    batch_requests_per_minute = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    batch_tokens_per_minute = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    unscoped_objects = models.Manager()
    objects = TenantScopedManager()

    class Meta:
        default_manager_name = "unscoped_objects"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="apikey_tenant_created")]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "name"],
                condition=models.Q(revoked_at__isnull=True),
                name="apikey_unique_live_name_per_tenant",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"

    @property
    def prefix(self) -> str:
        """The displayable, non-secret start of the key."""
        return f"{keyformat.KEY_PREFIX}_{self.env}_{self.key_id}_…"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_usable(self) -> bool:
        return not self.is_revoked and not self.is_expired and self.tenant.is_active

    @classmethod
    def issue(cls, *, tenant: Tenant, name: str, scopes: list[str], **fields: Any) -> tuple[ApiKey, str]:
        """Create a key and return it with the full secret string, which is never stored."""
        while True:
            full_key, parts = keyformat.generate_key(env="live")
            if not cls.unscoped_objects.filter(key_id=parts.key_id).exists():
                break
        key = cls.unscoped_objects.create(
            tenant=tenant,
            name=name,
            scopes=sorted(set(scopes)),
            key_id=parts.key_id,
            env=parts.env,
            secret_hash=keyformat.hash_secret(parts.secret, settings.FRONTDOOR_KEY_PEPPER),
            **fields,
        )
        return key, full_key

    def verify(self, presented_secret: str) -> bool:
        return keyformat.secret_matches(presented_secret, self.secret_hash, settings.FRONTDOOR_KEY_PEPPER)

    def revoke(self) -> bool:
        """Revoke once; returns False when it was already revoked (a second revoke changes nothing)."""
        unrevoked = ApiKey.unscoped_objects.filter(pk=self.pk, revoked_at__isnull=True)
        updated = unrevoked.update(revoked_at=timezone.now())
        self.refresh_from_db(fields=["revoked_at"])
        if updated:
            # .update() sends no post_save: say so, and the snapshot's triggers republish after commit.
            bulk_change.send(
                sender=ApiKey, update_fields=frozenset({"revoked_at"}), using=unrevoked.db, tenant_ids=[self.tenant_id]
            )
        return bool(updated)


class AuditEvent(models.Model):
    """Who did what to which object, with the changed fields and the request id."""

    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    changes = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    unscoped_objects = models.Manager()
    objects = TenantScopedManager()

    class Meta:
        default_manager_name = "unscoped_objects"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="audit_tenant_created")]

    def __str__(self) -> str:
        return f"{self.action} {self.object_type}:{self.object_id}"


class IdempotencyRecord(models.Model):
    """The first response to a POST carrying ``Idempotency-Key``, replayed for the same key and body."""

    principal = models.CharField(max_length=64)  # "user:<id>" or "key:<key_id>"
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=500)
    body_sha256 = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["principal", "key"], name="idempotency_unique_key")]

    def __str__(self) -> str:
        return f"{self.principal} {self.method} {self.path} ({self.key})"

    @staticmethod
    def body_digest(body: bytes) -> str:
        return hashlib.sha256(body).hexdigest()
