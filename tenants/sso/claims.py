"""The group claim mapped to platform staff and tenant roles, applied at each sign-in through the provider.

- ``FRONTDOOR_OIDC_STAFF_GROUPS``: when set, the claim decides ``is_staff``: in one of these groups, staff; in none,
  not (staff made by hand lose it at their next sign-in through the provider).
- ``FRONTDOOR_OIDC_TENANT_ROLES``: each tenant it names is governed by the claim: a person gets the strongest role
  their groups give there, their role changes when their groups do, and they leave the tenant when no group gives
  them a role in it. Tenants it does not name are the console's (members pages, invitations) as before.

A sign-in whose claims lack the group claim changes nothing (a provider that stopped releasing it must not empty
every mapped tenant). Changes go through ``tenants.services`` as the system (actor None), each with its audit event
and the sign-in's request id; staff changes are audited as ``user.change_staff``. A tenant's last owner stays one.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction

from controlplane.audit import record_audit
from controlplane.domain_errors import Conflict, Forbidden
from tenants import services
from tenants.models import Membership, Tenant, role_at_least
from tenants.sso.config import MAX_GROUP_NAME, OidcSettings

log = logging.getLogger(__name__)

MAX_GROUPS = 500


def groups_of(claims: dict[str, Any], claim: str) -> frozenset[str] | None:
    """The groups named by ``claim`` (a dotted path such as ``realm_access.roles``), or None when it is absent.

    A list keeps its strings (at most ``MAX_GROUPS``, each at most ``MAX_GROUP_NAME`` characters); a single string is
    one group; anything else is no group.
    """
    value: Any = claims
    for part in claim.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return frozenset(item for item in items[:MAX_GROUPS] if isinstance(item, str) and 0 < len(item) <= MAX_GROUP_NAME)


def wanted_roles(groups: frozenset[str], config: OidcSettings) -> dict[str, str | None]:
    """For each tenant the mapping names, the strongest role ``groups`` give there (None: no role)."""
    wanted: dict[str, str | None] = {grant.tenant: None for grant in config.tenant_roles.values()}
    for group in groups:
        grant = config.tenant_roles.get(group)
        if grant is not None and not role_at_least(wanted[grant.tenant], grant.role):
            wanted[grant.tenant] = grant.role
    return wanted


def sync_staff(user: User, groups: frozenset[str], config: OidcSettings, *, request_id: str) -> None:
    staff = bool(groups & config.staff_groups)
    if user.is_staff == staff:
        return
    with transaction.atomic():
        record_audit(None, None, "user.change_staff", user, {"is_staff": [user.is_staff, staff]}, request_id=request_id)
        user.is_staff = staff
        user.save(update_fields=["is_staff"])


def _sync_tenant(user: User, tenant: Tenant, role: str | None, *, request_id: str) -> None:
    membership = Membership.objects.for_tenant(tenant).filter(user_id=user.pk).select_related("tenant").first()
    try:
        if membership is None and role is not None:
            services.add_member(tenant, user=user, role=role, actor=None, request_id=request_id)
        elif membership is not None and role is None:
            services.remove_member(membership, actor=None, request_id=request_id)
        elif membership is not None and role is not None and membership.role != role:
            services.change_role(membership, role=role, actor=None, request_id=request_id)
    except (Conflict, Forbidden) as exc:  # the tenant's last owner, or an add that lost a race
        log.warning("group claim: %s keeps their place in %s: %s", user.get_username(), tenant.slug, exc.message)


def sync_tenant_roles(user: User, groups: frozenset[str], config: OidcSettings, *, request_id: str) -> None:
    wanted = wanted_roles(groups, config)
    tenants = {tenant.slug: tenant for tenant in Tenant.objects.filter(slug__in=list(wanted))}
    for slug, role in sorted(wanted.items()):
        if slug not in tenants:
            log.warning("FRONTDOOR_OIDC_TENANT_ROLES names tenant %r, which does not exist", slug)
            continue
        _sync_tenant(user, tenants[slug], role, request_id=request_id)


def apply_claims(user: User, claims: dict[str, Any], config: OidcSettings, *, request_id: str) -> None:
    """Make ``user``'s staff flag and mapped tenant roles what their groups say (nothing when no mapping is set)."""
    if not config.maps_groups:
        return
    groups = groups_of(claims, config.groups_claim)
    if groups is None:
        log.warning("the provider sent no %r claim for %s: roles left as they are", config.groups_claim, user.pk)
        return
    if config.staff_groups:
        sync_staff(user, groups, config, request_id=request_id)
    if config.tenant_roles:
        sync_tenant_roles(user, groups, config, request_id=request_id)
