"""A tenant's secrets: set, rotate and delete them (the REST API and the console call these), and open them for the
reconciler, the only reader of a value.

A value is sealed at rest with ``FRONTDOOR_SECRETS_KEY`` (``controlplane.contracts.sealing``) under the context
``secret:<tenant id>:<name>``, so a sealed value copied to another tenant's row does not open. Audit events name the
secret and its version, never the value.

A change reaches what uses the secret once it commits: the tenant's objects are reconciled (the Kubernetes Secret
and registry login), each deployment that uses it is reconciled (its pods roll to the new version), and the
tenant's snapshot section is published again (an external deployment's upstream key).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Q, QuerySet

from controlplane.audit import record_audit
from controlplane.contracts.sealing import Sealer, context
from controlplane.contracts.snapshot import upstream_key_problem
from controlplane.domain_errors import Conflict, Invalid
from controlplane.snapshot.triggers import request_publish
from deployments.models import ModelDeployment, Revision, TenantSecret
from deployments.reconcile.enqueue import enqueue_reconcile, enqueue_reconcile_tenant
from tenants.models import Tenant

if TYPE_CHECKING:
    from controlplane.access import Principal


class SecretInUse(Conflict):
    """The secret is referenced by deployments; the message names them."""

    code = "secret_in_use"
    default_message = "the secret is in use"


def at_rest_sealer() -> Sealer:
    return Sealer.from_text(settings.FRONTDOOR_SECRETS_KEY)


def transport_sealer() -> Sealer | None:
    """The sealer for values that travel through Redis (to the gateway and the local agent); None when unset."""
    return Sealer.from_text(settings.FRONTDOOR_SEAL_KEY) if settings.FRONTDOOR_SEAL_KEY else None


def _context(tenant_id: int, name: str) -> str:
    return context("secret", tenant_id, name)


def reveal(secret: TenantSecret) -> str:
    """The value in clear: for the reconciler and the snapshot publisher only, never for a response or a log."""
    return at_rest_sealer().unseal(secret.sealed_value, _context(secret.tenant_id, secret.name))


def value_errors(value: object) -> list[str]:
    if not isinstance(value, str) or not value:
        return ["must be a non-empty string"]
    if "\x00" in value:
        return ["contains a NUL byte"]
    size = len(value.encode())
    if size > settings.FRONTDOOR_SECRET_MAX_BYTES:
        return [f"is {size} bytes; the most a secret holds is {settings.FRONTDOOR_SECRET_MAX_BYTES}"]
    return []


def _check(secret: TenantSecret, value: str | None) -> None:
    errors: dict[str, list[str]] = {}
    try:
        # The registry constraint is checked below with a message that names the field.
        secret.full_clean(
            exclude=["tenant", "created_by", "sealed_value"], validate_unique=False, validate_constraints=False
        )
    except ValidationError as exc:
        errors.update({name: list(messages) for name, messages in exc.message_dict.items()})
    if value is not None and (problems := value_errors(value)):
        errors["value"] = problems
    if secret.kind == TenantSecret.Kind.REGISTRY:
        if not secret.registry_server:
            errors.setdefault("registry_server", []).append("a registry secret needs the registry's host")
        if not secret.registry_username:
            errors.setdefault("registry_username", []).append("a registry secret needs the user name it logs in as")
    elif secret.registry_server or secret.registry_username:
        errors.setdefault("kind", []).append("registry_server and registry_username are for kind 'registry' only")
    if errors:
        raise Invalid(errors)


def create_secret(
    tenant: Tenant,
    *,
    name: str,
    value: str,
    kind: str = TenantSecret.Kind.GENERIC,
    registry_server: str = "",
    registry_username: str = "",
    actor: Principal | None,
    request_id: str = "",
) -> TenantSecret:
    secret = TenantSecret(
        tenant=tenant, name=name, kind=kind, registry_server=registry_server, registry_username=registry_username
    )
    _check(secret, value)
    with transaction.atomic():
        # The tenant row serialises creations, so two racing ones cannot both pass the count or the name check.
        Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
        existing = TenantSecret.unscoped_objects.filter(tenant=tenant)
        if existing.filter(name=name).exists():
            raise Invalid({"name": [f"the tenant already has a secret named {name!r}; change its value instead"]})
        if existing.count() >= settings.FRONTDOOR_SECRETS_PER_TENANT:
            limit = settings.FRONTDOOR_SECRETS_PER_TENANT
            raise Invalid({"name": [f"the tenant has {limit} secrets, the most it may have; delete one first"]})
        secret.sealed_value = at_rest_sealer().seal(value, _context(tenant.pk, name))
        secret.created_by_id = actor.user_id if actor is not None else None
        secret.save()
        record_audit(actor, tenant, "secret.create", secret, {"name": name, "kind": kind}, request_id=request_id)
        _after_change(secret)
    return secret


def update_secret(
    secret: TenantSecret,
    *,
    value: str | None = None,
    registry_server: str | None = None,
    registry_username: str | None = None,
    actor: Principal | None,
    request_id: str = "",
) -> TenantSecret:
    """Rotate the value and, for a registry login, change its host or user; the version goes up when anything did."""
    with transaction.atomic():
        locked = TenantSecret.unscoped_objects.select_for_update().get(pk=secret.pk)
        changes: dict[str, Any] = {}
        for field, new in (("registry_server", registry_server), ("registry_username", registry_username)):
            if new is not None and getattr(locked, field) != new:
                changes[field] = [getattr(locked, field), new]
                setattr(locked, field, new)
        _check(locked, value)
        if value is not None and (problem := _upstream_refusal(locked, value)):
            raise Invalid({"value": [problem]})
        if value is not None and value != reveal(locked):
            locked.sealed_value = at_rest_sealer().seal(value, _context(locked.tenant_id, locked.name))
            changes["value_rotated"] = True
        if not changes:
            return locked
        locked.version += 1
        changes["version"] = locked.version
        locked.save()
        record_audit(actor, locked.tenant, "secret.update", locked, changes, request_id=request_id)
        _after_change(locked)
    return locked


def _upstream_refusal(secret: TenantSecret, value: str) -> str:
    """Why ``value`` cannot replace a secret some deployment sends as its upstream key ("" when it can)."""
    used = ModelDeployment.unscoped_objects.filter(tenant_id=secret.tenant_id, upstream_key_secret=secret.name)
    if (problem := upstream_key_problem(value)) and used.exists():
        return f"{secret.name!r} is an upstream API key, and {problem}"
    return ""


def delete_secret(secret: TenantSecret, *, actor: Principal | None, request_id: str = "") -> None:
    """Delete a secret nothing uses; ``SecretInUse`` names the deployments that do."""
    with transaction.atomic():
        locked = TenantSecret.unscoped_objects.select_for_update().get(pk=secret.pk)
        if users := users_of(locked):
            raise SecretInUse(f"secret {locked.name!r} is used by {', '.join(users)}; stop using it there first")
        record_audit(actor, locked.tenant, "secret.delete", locked, {"name": locked.name}, request_id=request_id)
        locked.delete()
        _after_change(locked, deleted=True)


def users_of(secret: TenantSecret) -> list[str]:
    """The names of the tenant's live deployments that use ``secret``, sorted (see ``users_by_secret``)."""
    if secret.kind == TenantSecret.Kind.REGISTRY:
        return []
    return users_by_secret(secret.tenant_id).get(secret.name, [])


def users_by_secret(tenant_id: int) -> dict[str, list[str]]:
    """For each secret name, the tenant's live deployments that use it, sorted; in two queries for any number.

    Registry logins are used by every pod of the tenant, so nothing holds them; a generic secret is used by a
    deployment that names it in ``secret_env`` or as its upstream key, or whose running revisions still do.
    """
    live = _live(tenant_id)
    users: dict[str, set[str]] = {}
    for name, secret_env, upstream in live.values_list("name", "secret_env", "upstream_key_secret"):
        for secret in _named(secret_env, upstream):
            users.setdefault(secret, set()).add(name)
    running = Revision.unscoped_objects.filter(deployment__in=live).filter(Q(weight__gt=0) | Q(desired_replicas__gt=0))
    for name, spec in running.values_list("deployment__name", "spec"):
        for secret in ((spec or {}).get("secret_env") or {}).values() if isinstance(spec, dict) else ():
            users.setdefault(str(secret), set()).add(name)
    return {secret: sorted(names) for secret, names in users.items()}


def _live(tenant_id: int) -> QuerySet[ModelDeployment]:
    return ModelDeployment.unscoped_objects.filter(tenant_id=tenant_id).exclude(
        desired_state=ModelDeployment.DesiredState.DELETING
    )


def _named(secret_env: object, upstream: str) -> set[str]:
    """The secrets a deployment's fields name: its ``secret_env`` values and its upstream key."""
    named = {str(v) for v in secret_env.values()} if isinstance(secret_env, dict) else set()
    return named | ({upstream} if upstream else set())


def _after_change(secret: TenantSecret, *, deleted: bool = False) -> None:
    enqueue_reconcile_tenant(secret.tenant_id)
    if not deleted:
        for pk, secret_env, upstream in _live(secret.tenant_id).values_list("pk", "secret_env", "upstream_key_secret"):
            if secret.name in _named(secret_env, upstream):
                enqueue_reconcile(pk)
    request_publish(tenant_id=secret.tenant_id)


def secret_reference_errors(deployment: ModelDeployment) -> dict[str, list[str]]:
    """Why the deployment's secret references are refused: unknown names, registry logins, a variable named twice,
    an upstream key on a runtime that has no upstream, or values that would cross Redis with no seal key."""
    errors: dict[str, list[str]] = {}
    secret_env = deployment.secret_env
    if not isinstance(secret_env, dict) or not all(isinstance(v, str) for v in secret_env.values()):
        return {"secret_env": ["must map environment variable names to secret names"]}
    wanted = set(secret_env.values()) | ({deployment.upstream_key_secret} if deployment.upstream_key_secret else set())
    referenced = TenantSecret.unscoped_objects.filter(tenant_id=deployment.tenant_id, name__in=wanted)
    if wanted and connection.in_atomic_block:
        # Locked until the deployment is saved: a concurrent delete_secret waits, then sees the new user.
        referenced = referenced.select_for_update()
    kinds = dict(referenced.values_list("name", "kind"))
    env = deployment.env if isinstance(deployment.env, dict) else {}
    for variable, name in secret_env.items():
        if variable in env:
            errors.setdefault("secret_env", []).append(f"{variable} is set in env too; set it in one place")
        if name not in kinds:
            errors.setdefault("secret_env", []).append(f"{variable}: the tenant has no secret named {name!r}")
        elif kinds[name] != TenantSecret.Kind.GENERIC:
            errors.setdefault("secret_env", []).append(f"{variable}: {name!r} is a registry login, not a value")
    upstream = deployment.upstream_key_secret
    if upstream:
        if deployment.runtime != "external":
            errors.setdefault("upstream_key_secret", []).append("only runtime 'external' sends an upstream key")
        elif kinds.get(upstream) != TenantSecret.Kind.GENERIC:
            errors.setdefault("upstream_key_secret", []).append(f"the tenant has no secret named {upstream!r}")
        elif problem := upstream_key_problem(reveal(referenced.get(name=upstream))):
            errors.setdefault("upstream_key_secret", []).append(f"{upstream!r} cannot be sent as a key: {problem}")
    crosses_redis = bool(upstream) or (bool(secret_env) and settings.FRONTDOOR_BACKEND == "local")
    if crosses_redis and transport_sealer() is None:
        field = "upstream_key_secret" if upstream else "secret_env"
        errors.setdefault(field, []).append(
            "the platform has no FRONTDOOR_SEAL_KEY, so secrets cannot reach the gateway or the local agent; "
            "ask the operator to set one"
        )
    return errors
