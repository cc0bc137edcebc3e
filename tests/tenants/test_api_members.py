"""/api/v1/tenants/{tenant}/members/: list, add, change role, remove; owner rules and the last owner."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.db import connection
from rest_framework.test import APIClient

from controlplane.access import Principal
from controlplane.domain_errors import Conflict
from tenants import services
from tenants.models import AuditEvent, Membership, Role, Tenant

pytestmark = pytest.mark.django_db

Api = Callable[[User | None], APIClient]
BASE = "/api/v1/tenants/acme/members/"


@pytest.fixture
def newcomer(db: None) -> User:
    return User.objects.create_user("newcomer", password="pw")


def role_of(tenant: Tenant, user: User) -> str | None:
    return Membership.objects.for_tenant(tenant).filter(user=user).values_list("role", flat=True).first()


def test_viewers_list_members_with_filter_and_order(
    api: Api, alice: User, bob: User, vera: User, charlie: User
) -> None:
    client = api(vera)
    names = [row["username"] for row in client.get(BASE).json()["results"]]
    assert names == ["alice", "bob", "vera"]  # charlie belongs to globex
    assert [row["username"] for row in client.get(BASE + "?role=owner").json()["results"]] == ["alice"]
    ordered = [row["username"] for row in client.get(BASE + "?ordering=-user__username").json()["results"]]
    assert ordered == ["vera", "bob", "alice"]


def test_an_admin_adds_a_member_and_it_is_audited(api: Api, adam: User, acme: Tenant, newcomer: User) -> None:
    response = api(adam).post(BASE, {"username": "newcomer", "role": "member"}, format="json")
    assert response.status_code == 201
    assert response.json()["username"] == "newcomer"
    assert role_of(acme, newcomer) == Role.MEMBER
    event = AuditEvent.objects.for_tenant(acme).get(action="member.add")
    assert (event.actor, event.changes) == (adam, {"user": "newcomer", "role": "member"})


def test_adding_an_existing_member_is_a_409(api: Api, adam: User, bob: User) -> None:
    response = api(adam).post(BASE, {"username": "bob", "role": "viewer"}, format="json")
    assert response.status_code == 409


@pytest.mark.parametrize(
    ("payload", "field"),
    [({"username": "ghost"}, "username"), ({"username": "newcomer", "role": "god"}, "role"), ({}, "username")],
)
def test_it_refuses_bad_member_input(api: Api, adam: User, newcomer: User, payload: dict[str, str], field: str) -> None:
    before = Membership.objects.unscoped().count()
    response = api(adam).post(BASE, payload, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert Membership.objects.unscoped().count() == before


def test_only_owners_grant_the_owner_role(api: Api, alice: User, adam: User, acme: Tenant, newcomer: User) -> None:
    assert api(adam).post(BASE, {"username": "newcomer", "role": "owner"}, format="json").status_code == 403
    assert role_of(acme, newcomer) is None
    assert api(alice).post(BASE, {"username": "newcomer", "role": "owner"}, format="json").status_code == 201
    assert role_of(acme, newcomer) == Role.OWNER


def test_an_admin_changes_roles_but_not_an_owners(api: Api, alice: User, adam: User, bob: User, acme: Tenant) -> None:
    client = api(adam)
    assert client.patch(BASE + "bob/", {"role": "viewer"}, format="json").json()["role"] == "viewer"
    assert client.patch(BASE + "alice/", {"role": "member"}, format="json").status_code == 403
    assert client.patch(BASE + "bob/", {"role": "owner"}, format="json").status_code == 403
    assert (role_of(acme, alice), role_of(acme, bob)) == (Role.OWNER, Role.VIEWER)
    event = AuditEvent.objects.for_tenant(acme).get(action="member.change_role")
    assert event.changes == {"role": ["member", "viewer"]}


def test_the_last_owner_cannot_be_demoted_or_removed(api: Api, alice: User, staff: User, acme: Tenant) -> None:
    response = api(alice).patch(BASE + "alice/", {"role": "admin"}, format="json")
    assert response.status_code == 409
    assert "last owner" in response.json()["error"]["message"]
    assert api(staff).delete(BASE + "alice/").status_code == 409
    assert role_of(acme, alice) == Role.OWNER


def test_an_owner_steps_down_once_another_owner_exists(api: Api, alice: User, bob: User, acme: Tenant) -> None:
    client = api(alice)
    assert client.patch(BASE + "bob/", {"role": "owner"}, format="json").status_code == 200
    assert client.patch(BASE + "alice/", {"role": "admin"}, format="json").status_code == 200
    assert role_of(acme, alice) == Role.ADMIN


def test_an_admin_removes_a_member(api: Api, adam: User, bob: User, acme: Tenant) -> None:
    assert api(adam).delete(BASE + "bob/").status_code == 204
    assert role_of(acme, bob) is None
    assert AuditEvent.objects.for_tenant(acme).filter(action="member.remove").count() == 1


def test_a_member_of_another_tenant_is_404(api: Api, adam: User, charlie: User) -> None:
    assert api(adam).get(BASE + "charlie/").status_code == 404
    assert api(adam).delete(BASE + "charlie/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_two_owners_demoting_each_other_at_once_leave_one_owner(alice: User, bob: User, acme: Tenant) -> None:
    """The last-owner check locks the owner rows, so two simultaneous demotions cannot both pass it."""
    services.change_role(Membership.objects.for_tenant(acme).get(user=bob), role=Role.OWNER, actor=None)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def demote(user: User) -> None:
        try:
            membership = Membership.objects.for_tenant(acme).select_related("tenant").get(user=user)
            barrier.wait(timeout=10)
            services.change_role(membership, role=Role.ADMIN, actor=Principal(user.pk, None, Role.OWNER, False))
            outcomes.append("demoted")
        except Conflict:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=demote, args=(user,)) for user in (alice, bob)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["demoted", "refused"]
    assert Membership.objects.for_tenant(acme).filter(role=Role.OWNER).count() == 1
