"""The group claim mapped to platform staff and tenant roles: granted, changed and taken away, each audited."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User

from tenants.models import AuditEvent, Membership, Tenant
from tenants.sso.claims import MAX_GROUPS, apply_claims, groups_of, wanted_roles
from tenants.sso.config import OidcSettings, TenantGrant

CONFIG = OidcSettings(
    issuer="https://id.example.test",
    client_id="console",
    client_secret="s3cret",
    staff_groups=frozenset({"platform-staff"}),
    tenant_roles={
        "acme-viewers": TenantGrant("acme", "viewer"),
        "acme-admins": TenantGrant("acme", "admin"),
        "acme-owners": TenantGrant("acme", "owner"),
        "globex-members": TenantGrant("globex", "member"),
    },
)


def groups(*names: str) -> dict[str, Any]:
    return {"sub": "p-1", "groups": list(names)}


def role_in(tenant: Tenant, user: User) -> str | None:
    membership = Membership.objects.for_tenant(tenant).filter(user=user).first()
    return membership.role if membership else None


def test_it_reads_groups_from_a_list_a_string_or_a_dotted_path() -> None:
    assert groups_of({"groups": ["a", "b", 3, "", "x" * 300]}, "groups") == {"a", "b"}
    assert groups_of({"groups": "a"}, "groups") == {"a"}
    assert groups_of({"groups": {"a": 1}}, "groups") == frozenset()
    assert groups_of({"realm_access": {"roles": ["a"]}}, "realm_access.roles") == {"a"}
    assert groups_of({"realm_access": ["a"]}, "realm_access.roles") is None
    assert groups_of({}, "groups") is None
    assert len(groups_of({"groups": [f"g{i}" for i in range(MAX_GROUPS * 2)]}, "groups") or ()) == MAX_GROUPS


def test_the_strongest_role_a_tenant_gets_wins() -> None:
    assert wanted_roles(frozenset({"acme-viewers", "acme-admins"}), CONFIG) == {"acme": "admin", "globex": None}
    assert wanted_roles(frozenset({"unrelated"}), CONFIG) == {"acme": None, "globex": None}


def test_a_staff_group_makes_staff_and_leaving_it_unmakes_them(bob: User) -> None:
    apply_claims(bob, groups("platform-staff"), CONFIG, request_id="req-1")
    bob.refresh_from_db()
    assert bob.is_staff
    apply_claims(bob, groups(), CONFIG, request_id="req-2")
    bob.refresh_from_db()
    assert not bob.is_staff
    events = AuditEvent.objects.unscoped().filter(action="user.change_staff").order_by("created_at", "id")
    assert [(e.changes, e.request_id, e.actor_id, e.tenant_id) for e in events] == [
        ({"is_staff": [False, True]}, "req-1", None, None),
        ({"is_staff": [True, False]}, "req-2", None, None),
    ]


def test_groups_add_change_and_remove_a_mapped_tenants_role(acme: Tenant, globex: Tenant, alice: User) -> None:
    dana = User.objects.create_user("dana", email="dana@example.test")
    apply_claims(dana, groups("acme-viewers", "globex-members"), CONFIG, request_id="r1")
    assert (role_in(acme, dana), role_in(globex, dana)) == ("viewer", "member")
    apply_claims(dana, groups("acme-admins", "globex-members"), CONFIG, request_id="r2")
    assert role_in(acme, dana) == "admin"
    apply_claims(dana, groups("globex-members"), CONFIG, request_id="r3")
    assert (role_in(acme, dana), role_in(globex, dana)) == (None, "member")
    acme_events = AuditEvent.objects.for_tenant(acme).filter(action__startswith="member.").order_by("created_at", "id")
    assert [(e.action, e.changes, e.request_id, e.actor_id) for e in acme_events] == [
        ("member.add", {"user": "dana", "role": "viewer"}, "r1", None),
        ("member.change_role", {"role": ["viewer", "admin"]}, "r2", None),
        ("member.remove", {"user": "dana", "role": "admin"}, "r3", None),
    ]


def test_tenants_the_mapping_does_not_name_are_left_alone(acme: Tenant, bob: User) -> None:
    config = OidcSettings(
        issuer=CONFIG.issuer, client_id="c", client_secret="s", tenant_roles={"g": TenantGrant("globex", "member")}
    )
    apply_claims(bob, groups(), config, request_id="r")
    assert role_in(acme, bob) == "member"


def test_a_tenant_that_does_not_exist_is_skipped(acme: Tenant) -> None:
    dana = User.objects.create_user("dana", email="dana@example.test")
    apply_claims(dana, groups("acme-admins", "globex-members"), CONFIG, request_id="r")
    assert role_in(acme, dana) == "admin"


def test_a_tenants_last_owner_stays_one(acme: Tenant, alice: User) -> None:
    apply_claims(alice, groups(), CONFIG, request_id="r")
    assert role_in(acme, alice) == "owner"
    apply_claims(alice, groups("acme-viewers"), CONFIG, request_id="r")
    assert role_in(acme, alice) == "owner"


def test_claims_without_the_group_claim_change_nothing(acme: Tenant, adam: User) -> None:
    User.objects.filter(pk=adam.pk).update(is_staff=True)
    adam.refresh_from_db()
    apply_claims(adam, {"sub": "p-1"}, CONFIG, request_id="r")
    adam.refresh_from_db()
    assert adam.is_staff and role_in(acme, adam) == "admin"
    assert not AuditEvent.objects.unscoped().exists()


@pytest.mark.parametrize("claim", [{"groups": ["platform-staff"]}, {"groups": []}])
def test_without_a_mapping_the_claim_decides_nothing(bob: User, acme: Tenant, claim: dict[str, Any]) -> None:
    config = OidcSettings(issuer=CONFIG.issuer, client_id="c", client_secret="s")
    apply_claims(bob, claim, config, request_id="r")
    bob.refresh_from_db()
    assert not bob.is_staff and role_in(acme, bob) == "member"
