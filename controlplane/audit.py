"""The audit trail: one ``record_audit`` call per write, from the REST API, the console and services.

``record_audit(request_or_principal, tenant, action, obj, changes)`` writes an ``AuditEvent`` naming the actor
(a user, an API key, or neither for system work), the tenant, the action (``"<object type>.<verb>"``, e.g.
``"deployment.create"``), the object by the name a person knows it by (``object_name``), the changed fields and
the request id. Call it inside the same transaction as the change, so an event exists exactly when the change
committed. ``describe_event`` turns an event into what the console's audit log shows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Model

from tenants.models import ApiKey, AuditEvent, Invitation, Membership, Tenant


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
REDACTED = "[redacted]"


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
    return {str(name): (REDACTED if name in _REDACTED_FIELDS else _jsonable(value)) for name, value in changes.items()}


# A tenant has one of each: the type says which, a name would only repeat the tenant's.
_UNNAMED_TYPES = frozenset({"quota", "tenantsettings"})


def object_name(obj: Model) -> str:
    """What a person calls ``obj``: a tenant's slug, a member's username, an invitation's email, otherwise its
    ``name`` or ``public_id``; empty for a tenant's quota or settings (one each)."""
    if isinstance(obj, Tenant):
        return obj.slug
    if isinstance(obj, Membership):
        return obj.user.get_username()
    if isinstance(obj, Invitation):
        return obj.email
    if obj._meta.model_name in _UNNAMED_TYPES:
        return ""
    for attribute in ("name", "public_id"):
        value = getattr(obj, attribute, None)
        if isinstance(value, str) and value:
            return value
    return str(obj)


def diff_fields(instance: Model, new_values: dict[str, Any]) -> dict[str, Any]:
    """``{field: [old, new]}`` for each field in ``new_values`` whose value differs from ``instance``'s."""
    changed: dict[str, Any] = {}
    for name, new in new_values.items():
        old = getattr(instance, name, None)
        if old != new:
            changed[name] = [_jsonable(old), _jsonable(new)]
    return changed


def _actor_of(request_or_principal: Any) -> Actor:
    """Who acted: works for a DRF/Django request, a ``Principal``, a user, an ``Actor`` or ``None`` (system)."""
    if request_or_principal is None:
        return Actor(user_id=None, api_key_id=None, request_id="")
    if isinstance(request_or_principal, Actor):
        return request_or_principal
    # A user acting for themselves (accepting an invitation): the person, never the system.
    if isinstance(request_or_principal, AbstractBaseUser):
        return Actor(user_id=request_or_principal.pk, api_key_id=None, request_id="")
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
        object_repr="" if obj is None else object_name(obj)[:200],
        changes=clean_changes(changes),
        request_id=actor.request_id[:64],
    )


# ---------------------------------------------------------------- reading the trail

# ``object_type`` is the model's name; people know the objects by these.
_OBJECT_KINDS = {
    "modeldeployment": "deployment",
    "apikey": "API key",
    "membership": "member",
    "tenantsecret": "secret",
    "tenantsettings": "settings",
    "batchfile": "batch file",
}
# What each verb of an action (``"<object type>.<verb>"``) says, ``{}`` standing for the object.
_VERB_PHRASES = {
    "create": "created {}",
    "update": "changed {}",
    "delete": "deleted {}",
    "add": "added {}",
    "remove": "removed {}",
    "revoke": "revoked {}",
    "suspend": "suspended {}",
    "resume": "resumed {}",
    "cancel": "cancelled {}",
    "accept": "accepted {}",
    "scale": "scaled {}",
    "traffic": "moved the traffic of {}",
    "change_role": "changed the role of {}",
    "rotate_webhook_secret": "rotated the webhook signing secret",
}
# Events of these verbs hold the new object's values; every other event holds ``[before, after]`` per changed field.
_CREATING_VERBS = frozenset({"create", "add"})
_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


@dataclass(frozen=True)
class FieldChange:
    """One field of an event as a person reads it: ``before`` → ``after``, or only ``after`` for a value set."""

    field: str
    after: str
    before: str | None = None


@dataclass(frozen=True)
class EventDescription:
    """What the audit log shows of an event: its object ("API key ci-bot"), a summary ("created API key ci-bot")
    and its fields."""

    subject: str
    summary: str
    changes: tuple[FieldChange, ...]


def describe_event(event: AuditEvent) -> EventDescription:
    """``event`` in words, from its own columns (no query)."""
    kind_of_action, _, verb = event.action.partition(".")
    kind = _OBJECT_KINDS.get(event.object_type, event.object_type or kind_of_action.replace("_", " "))
    subject = f"{kind} {event.object_repr}".strip()
    summary = _VERB_PHRASES.get(verb, verb.replace("_", " ") + " {}").replace("{}", subject).strip()
    return EventDescription(subject, summary, readable_changes(event.action, event.changes))


def readable_changes(action: str, changes: dict[str, Any]) -> tuple[FieldChange, ...]:
    """The fields of an event in name order, values as text; a change of a mapping of pairs (traffic weights per
    revision) is one line per entry."""
    pairs = action.rpartition(".")[2] not in _CREATING_VERBS
    lines: list[FieldChange] = []
    for name, value in sorted((changes or {}).items()):
        label = name.replace("_", " ")
        if pairs and isinstance(value, dict) and value and all(_is_pair(v) for v in value.values()):
            lines += [FieldChange(f"{label} {k}", _shown(v[1]), _shown(v[0])) for k, v in sorted(value.items())]
        elif pairs and _is_pair(value):
            lines.append(FieldChange(label, _shown(value[1]), _shown(value[0])))
        else:
            lines.append(FieldChange(label, _shown(value)))
    return tuple(lines)


def _is_pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2


def _shown(value: Any) -> str:
    """A stored value as text: none, yes/no, thousands separators, times in UTC, lists joined."""
    if value is None or value == "" or value == []:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value == REDACTED:
        return "hidden"
    if isinstance(value, int | float):
        return f"{value:,}"
    if isinstance(value, str):
        return _utc_text(value) if _ISO_TIME.match(value) else value
    if isinstance(value, list):
        return ", ".join(_shown(item) for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{key} {_shown(item)}" for key, item in value.items()) or "none"
    return str(value)


def _utc_text(value: str) -> str:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is None:
        return value
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
