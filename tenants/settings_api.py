"""REST endpoint for a tenant's notification settings: ``/api/v1/tenants/{tenant}/settings/`` (admins only).

- ``GET``: ``{"tenant", "webhook_url", "webhook_secret_set", "updated_at"}`` — never the secret;
- ``PUT``/``PATCH`` ``{"webhook_url": "https://..." | ""}``: the URL must pass the SLO webhook sender's own check
  (``controlplane.webhooks.check_webhook_url``: http(s), no credentials, every resolved address public), else a 400
  field error. The first URL gets a signing secret, returned in that one response as ``webhook_secret``;
  clearing the URL drops it;
- ``POST .../settings/rotate-secret/``: a new secret, returned once (409 while no webhook is set).

Every change is an audit event (``settings.update``, ``settings.rotate_webhook_secret``) without the secret.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.api import TenantScopedViewSet
from controlplane.idempotency import IdempotentMixin
from controlplane.permissions import IsAuthenticatedPrincipal
from controlplane.webhooks import WebhookRefused, check_webhook_url
from tenants import webhook_settings
from tenants.models import Role, TenantSettings


class NoWebhook(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "no_webhook"
    default_detail = "set a webhook URL first; its signing secret is made then"


class TenantSettingsSerializer(serializers.Serializer[TenantSettings]):
    """What a tenant sees of its settings; ``webhook_secret`` appears only in the answer that made it."""

    tenant = serializers.CharField(source="tenant.slug", read_only=True)
    webhook_url = serializers.URLField(max_length=500, allow_blank=True)
    webhook_secret_set = serializers.SerializerMethodField()
    updated_at = serializers.DateTimeField(read_only=True, allow_null=True)

    def get_webhook_secret_set(self, row: TenantSettings) -> bool:
        return bool(row.webhook_secret)

    def validate_webhook_url(self, value: str) -> str:
        if value:
            try:
                check_webhook_url(value)
            except WebhookRefused as exc:
                raise serializers.ValidationError(str(exc)) from exc
        return value


def _answer(row: TenantSettings, new_secret: str | None) -> Response:
    body = dict(TenantSettingsSerializer(row).data)
    if new_secret is None:
        return Response(body)
    body["webhook_secret"] = new_secret
    response = Response(body)
    response["Cache-Control"] = "no-store"  # the secret must not linger in caches
    return response


@extend_schema_view(
    retrieve=extend_schema(summary="The tenant's notification settings (admins)"),
    update=extend_schema(summary="Set the SLO webhook URL (admins); a first URL returns its signing secret once"),
    partial_update=extend_schema(summary="Change the SLO webhook URL (admins)"),
)
class TenantSettingsViewSet(IdempotentMixin, TenantScopedViewSet):
    """The tenant's single settings row; the tenant is resolved by the chokepoint, so there is no lookup id."""

    model = TenantSettings
    permission_classes = [IsAuthenticatedPrincipal]
    queryset = TenantSettings.unscoped_objects.none()  # for the schema generator only
    serializer_class = TenantSettingsSerializer
    read_role = Role.ADMIN
    write_role = Role.ADMIN
    idempotency_redacted_fields = frozenset({"webhook_secret"})  # a replayed rotation answers "webhook_secret": null

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return _answer(TenantSettings.of(self.tenant), None)

    def _write(self, request: Request, *, partial: bool) -> Response:
        current = TenantSettings.of(self.tenant)
        serializer = self.get_serializer(current, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        url = serializer.validated_data.get("webhook_url", current.webhook_url)
        row, new_secret = webhook_settings.set_webhook(
            self.tenant, url, actor=self.principal, request_id=self.request_id
        )
        return _answer(row, new_secret)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._write(request, partial=False)

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._write(request, partial=True)

    @extend_schema(summary="Replace the webhook signing secret (admins); returned once", request=None)
    def rotate_secret(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        row, new_secret = webhook_settings.rotate_webhook_secret(
            self.tenant, actor=self.principal, request_id=self.request_id
        )
        if new_secret is None:
            raise NoWebhook()
        return _answer(row, new_secret)
