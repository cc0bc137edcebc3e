"""The audit trail: one ``record_audit`` call per write, from the REST API, the console and services.

``record_audit(request_or_principal, tenant, action, obj, changes)`` writes an ``AuditEvent`` naming the actor
(a user, an API key, or neither for system work), the tenant, the action (``"<object type>.<verb>"``, e.g.
``"deployment.create"``), the object, the changed fields and the request id. Call it inside the same
transaction as the change, so an event exists exactly when the change committed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db.models import Model

from tenants.models import ApiKey, AuditEvent, Tenant


@dataclass(frozen=True)
class Actor:
    """Who acted, resolved once: a user id, an API key id (either may be None) and the request id."""

    user_id: int | None
    api_key_id: int | None
    request_id: str


# Field names whose values never go into the audit trail (they would leak secrets into a readable table).
_REDACTED_FIELDS = frozenset(
    {"secret", "secret_hash", "key", "password", "token", "full_key", "webhook_secret", "token_hash"}
)


def _jsonable(value: Any) -> Any:
    """Values as JSON can store them: datetimes as ISO text, model instances as their primary key."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Model):
        return value.pk
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def clean_changes(changes: dict[str, Any] | None) -> dict[str, Any]:
    """Changed fields as JSON, with secret-bearing fields replaced by a marker."""
    if not changes:
        return {}
    return {
        str(name): ("[redacted]" if name in _REDACTED_FIELDS else _jsonable(value)) for name, value in changes.items()
    }


def diff_fields(instance: Model, new_values: dict[str, Any]) -> dict[str, Any]:
    """``{field: [old, new]}`` for each field in ``new_values`` whose value differs from ``instance``'s."""
    changed: dict[str, Any] = {}
    for name, new in new_values.items():
        old = getattr(instance, name, None)
        if old != new:
            changed[name] = [_jsonable(old), _jsonable(new)]
    return changed


def _actor_of(request_or_principal: Any) -> Actor:
    """Who acted: works for a DRF/Django request, a ``Principal``, an ``Actor`` or ``None`` (system)."""
    if request_or_principal is None:
        return Actor(user_id=None, api_key_id=None, request_id="")
    if isinstance(request_or_principal, Actor):
        return request_or_principal
    request_id = str(getattr(request_or_principal, "request_id", "") or "")
    # A Principal (controlplane.api) carries user_id and api_key directly.
    if hasattr(request_or_principal, "api_key") and hasattr(request_or_principal, "user_id"):
        key = request_or_principal.api_key
        return Actor(user_id=request_or_principal.user_id, api_key_id=key.pk if key else None, request_id=request_id)
    # A request: DRF puts the ApiKey on request.auth; Django's session user is request.user.
    auth = getattr(request_or_principal, "auth", None)
    key_id = auth.pk if isinstance(auth, ApiKey) else None
    user = getattr(request_or_principal, "user", None)
    user_id = user.pk if user is not None and getattr(user, "is_authenticated", False) else None
    return Actor(user_id=user_id, api_key_id=key_id, request_id=request_id)


def record_audit(
    request_or_principal: Any,
    tenant: Tenant | None,
    action: str,
    obj: Model | None,
    changes: dict[str, Any] | None = None,
    *,
    object_type: str | None = None,
    request_id: str | None = None,
) -> AuditEvent:
    """Write one audit event. ``obj`` may be None (e.g. for bulk actions); pass ``object_type`` then.

    ``request_or_principal`` is a request (DRF or Django), a ``controlplane.access.Principal``, an ``Actor``,
    or None for system work (workers). ``request_id`` overrides the one taken from the request.
    """
    actor = _actor_of(request_or_principal)
    if request_id is not None:
        actor = replace(actor, request_id=request_id)
    if object_type is None:
        object_type = obj._meta.model_name or "" if obj is not None else ""
    return AuditEvent.unscoped_objects.create(
        tenant=tenant,
        actor_id=actor.user_id,
        actor_key_id=actor.api_key_id,
        action=action[:64],
        object_type=object_type[:64],
        object_id="" if obj is None or obj.pk is None else str(obj.pk)[:64],
        object_repr="" if obj is None else str(obj)[:200],
        changes=clean_changes(changes),
        request_id=actor.request_id[:64],
    )
