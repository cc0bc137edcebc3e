"""Set, clear and rotate a tenant's SLO webhook: the actions the REST settings API and the console share.

Each action runs in one transaction with the row locked (two first-time saves racing must not both hand out a
different secret) and writes one audit event without the secret.

The actor convention is ``tenants.services``'s: ``actor`` (keyword-only, required; ``None`` is the system) is the
acting principal and ``request_id`` the request's id for the audit event.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from django.db import transaction

from controlplane.audit import record_audit
from tenants.models import Tenant, TenantSettings

if TYPE_CHECKING:
    from controlplane.access import Principal


def new_webhook_secret() -> str:
    """A signing secret for ``X-Frontdoor-Signature`` (256 random bits)."""
    return "whsec_" + secrets.token_urlsafe(32)


def _locked(tenant: Tenant) -> TenantSettings:
    TenantSettings.unscoped_objects.get_or_create(tenant=tenant)
    return TenantSettings.unscoped_objects.select_for_update().get(tenant=tenant)


def set_webhook(
    tenant: Tenant, url: str, *, actor: Principal | None, request_id: str = ""
) -> tuple[TenantSettings, str | None]:
    """Set (or, with ``""``, clear) the webhook URL; the caller has checked it (``webhooks.check_webhook_url``).

    The first URL gets a new signing secret, returned here and nowhere else (the caller shows it once); clearing
    the URL drops the secret, so the next URL gets a fresh one. Returns the row and the new secret, or None when
    none was made.
    """
    with transaction.atomic():
        row = _locked(tenant)
        new_secret: str | None = None
        changes: dict[str, Any] = {}
        if row.webhook_url != url:
            changes["webhook_url"] = [row.webhook_url, url]
            row.webhook_url = url
        if url and not row.webhook_secret:
            new_secret = row.webhook_secret = new_webhook_secret()
            changes["webhook_secret_generated"] = True
        elif not url and row.webhook_secret:
            row.webhook_secret = ""
            changes["webhook_secret_dropped"] = True
        if changes:
            row.save()
            record_audit(actor, tenant, "settings.update", row, changes, request_id=request_id)
    return row, new_secret


def rotate_webhook_secret(
    tenant: Tenant, *, actor: Principal | None, request_id: str = ""
) -> tuple[TenantSettings, str | None]:
    """Replace the signing secret; the new one is returned once. None (and no change) when no webhook is set."""
    with transaction.atomic():
        row = _locked(tenant)
        if not row.webhook_url:
            return row, None
        row.webhook_secret = new_webhook_secret()
        row.save(update_fields=["webhook_secret", "updated_at"])
        changes = {"webhook_secret_rotated": True}
        record_audit(actor, tenant, "settings.rotate_webhook_secret", row, changes, request_id=request_id)
    return row, row.webhook_secret
