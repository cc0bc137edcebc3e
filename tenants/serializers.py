"""REST serializers for tenants, members, API keys and audit events.

Ownership fields (tenant, creator, status, key ids, hashes) are read-only: they come from the view's context,
never from the payload (a client cannot claim another tenant or creator). No serializer here has a field that can
carry a key's secret except ``ApiKeyCreatedSerializer.key``, used once, for the create response.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from controlplane.validators import INT_MAX, dns1123_label
from tenants.models import ApiKey, AuditEvent, Membership, Role, Scope, Tenant

User = get_user_model()


class TenantSerializer(serializers.ModelSerializer[Tenant]):
    role = serializers.SerializerMethodField(help_text="the caller's role in this tenant (staff: owner)")

    class Meta:
        model = Tenant
        fields = ["slug", "name", "status", "role", "created_at", "updated_at"]
        read_only_fields = ["slug", "status", "role", "created_at", "updated_at"]

    @extend_schema_field(serializers.ChoiceField(choices=Role.choices, allow_null=True))
    def get_role(self, tenant: Tenant) -> str | None:
        roles: dict[int, str] = self.context.get("roles", {})
        principal = self.context.get("principal")
        if principal is not None and getattr(principal, "role", None):
            return str(principal.role)
        return roles.get(tenant.pk)


class TenantCreateSerializer(serializers.Serializer[Tenant]):
    """Staff create a tenant; ``owner`` is the username of its first owner (optional)."""

    slug = serializers.CharField(max_length=40, validators=[dns1123_label])
    name = serializers.CharField(max_length=200)
    owner = serializers.CharField(required=False, help_text="username of the first owner")

    def validate_slug(self, value: str) -> str:
        if Tenant.objects.filter(slug=value).exists():
            raise serializers.ValidationError(f"a tenant with slug '{value}' already exists")
        return value

    def validate_owner(self, value: str) -> Any:
        user = User.objects.filter(username=value).first()
        if user is None:
            raise serializers.ValidationError(f"no user named '{value}'")
        return user


class TenantUpdateSerializer(serializers.Serializer[Tenant]):
    name = serializers.CharField(max_length=200)


class MembershipSerializer(serializers.ModelSerializer[Membership]):
    username = serializers.CharField(source="user.username", read_only=True)
    email = serializers.EmailField(source="user.email", read_only=True)

    class Meta:
        model = Membership
        fields = ["username", "email", "role", "created_at"]
        read_only_fields = ["username", "email", "created_at"]


class MembershipCreateSerializer(serializers.Serializer[Membership]):
    username = serializers.CharField(help_text="an existing user's username")
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)

    def validate_username(self, value: str) -> Any:
        user = User.objects.filter(username=value, is_active=True).first()
        if user is None:
            raise serializers.ValidationError(f"no active user named '{value}'")
        return user


class MembershipUpdateSerializer(serializers.Serializer[Membership]):
    role = serializers.ChoiceField(choices=Role.choices)


class ApiKeySerializer(serializers.ModelSerializer[ApiKey]):
    """A key as listed: its public id and prefix, never its secret or hash."""

    prefix = serializers.CharField(read_only=True)
    revoked = serializers.BooleanField(source="is_revoked", read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True, default=None, allow_null=True)
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=Scope.choices), read_only=True)

    class Meta:
        model = ApiKey
        fields = [
            "key_id",
            "prefix",
            "name",
            "scopes",
            "requests_per_minute",
            "tokens_per_minute",
            "max_concurrent_requests",
            "batch_requests_per_minute",
            "batch_tokens_per_minute",
            "expires_at",
            "last_used_at",
            "revoked_at",
            "revoked",
            "created_by",
            "created_at",
        ]
        read_only_fields = ["key_id", "prefix", "last_used_at", "revoked_at", "revoked", "created_by", "created_at"]


def _future(value: Any) -> Any:
    if value is not None and value <= timezone.now():
        raise serializers.ValidationError("must be in the future")
    return value


class ApiKeyCreateSerializer(serializers.Serializer[ApiKey]):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=Scope.choices), min_length=1, max_length=3, allow_empty=False
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True, validators=[_future])
    requests_per_minute = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=INT_MAX)
    tokens_per_minute = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=INT_MAX)
    max_concurrent_requests = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=INT_MAX)
    batch_requests_per_minute = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=INT_MAX
    )
    batch_tokens_per_minute = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=INT_MAX)


class ApiKeyUpdateSerializer(serializers.Serializer[ApiKey]):
    name = serializers.CharField(max_length=100, required=False)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, validators=[_future])
    requests_per_minute = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=INT_MAX)
    tokens_per_minute = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=INT_MAX)
    max_concurrent_requests = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=INT_MAX)
    batch_requests_per_minute = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=INT_MAX
    )
    batch_tokens_per_minute = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=INT_MAX)


class ApiKeyCreatedSerializer(ApiKeySerializer):
    """The create response: the listed fields plus ``key``, the full secret, shown this once."""

    key = serializers.CharField(read_only=True, help_text="the full API key; shown only in this response")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]


class AuditEventSerializer(serializers.ModelSerializer[AuditEvent]):
    actor = serializers.CharField(source="actor.username", read_only=True, default=None, allow_null=True)
    actor_key = serializers.CharField(source="actor_key.key_id", read_only=True, default=None, allow_null=True)

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "created_at",
            "action",
            "actor",
            "actor_key",
            "object_type",
            "object_id",
            "object_repr",
            "changes",
            "request_id",
        ]
        read_only_fields = fields
