"""A new API key's full text, carried from the console's POST that issued it to the one page that shows it.

The keys page answers a successful POST with a redirect (so reloading the page that shows the key repeats a GET,
never the POST), which means the key must survive one request. It waits in the creator's session, sealed with the
at-rest key (``FRONTDOOR_SECRETS_KEY``) and bound to its tenant and key id, so the session row never holds the key
in clear; the first full page of that tenant's keys takes it out and shows it, and from then on it is gone.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from django.conf import settings

from controlplane.contracts.sealing import Sealer, SealError, context
from tenants.models import ApiKey, Tenant

SESSION_KEY = "frontdoor.new_api_key"


def _sealer() -> Sealer:
    return Sealer.from_text(settings.FRONTDOOR_SECRETS_KEY)


def _context(tenant_id: int, key_id: str) -> str:
    return context("console-new-key", tenant_id, key_id)


def hold_for_reveal(session: MutableMapping[str, Any], key: ApiKey, full_key: str) -> None:
    """Keep ``full_key`` in ``session`` until ``take_for_reveal`` (a later key replaces an unseen earlier one)."""
    sealed = _sealer().seal(full_key, _context(key.tenant_id, key.key_id))
    session[SESSION_KEY] = {"tenant": key.tenant_id, "key_id": key.key_id, "sealed": sealed}


def take_for_reveal(session: MutableMapping[str, Any], tenant: Tenant) -> tuple[str, str] | None:
    """The held (key id, full key) of ``tenant``, removed from ``session``; None when none is held for it."""
    held = session.get(SESSION_KEY)
    if not isinstance(held, dict) or held.get("tenant") != tenant.pk:
        return None
    del session[SESSION_KEY]
    key_id = str(held.get("key_id", ""))
    try:
        return key_id, _sealer().unseal(str(held.get("sealed", "")), _context(tenant.pk, key_id))
    except SealError:  # the at-rest key was rotated away meanwhile: the key cannot be shown, only replaced
        return None
