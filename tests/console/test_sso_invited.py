"""Open invitations accepted at sign-in through the provider: each open one once, none that is not open."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.models import User
from django.utils import timezone

from controlplane.access import staff_principal
from tenants.invitations import create_invitation, revoke_invitation
from tenants.models import AuditEvent, Invitation, Membership, Tenant
from tenants.sso.invited import accept_open_invitations


def invite(tenant: Tenant, role: str = "member", email: str = "ivy@example.test") -> Invitation:
    invitation, _ = create_invitation(tenant, email=email, role=role, invited_by=None, actor=None)
    return invitation


def test_every_open_invitation_of_the_address_is_accepted_once(acme: Tenant, globex: Tenant) -> None:
    invite(acme, "viewer", email="IVY@example.test")
    invite(globex, "admin")
    ivy = User.objects.create_user("ivy", email="ivy@example.test")
    joined = accept_open_invitations(ivy, "ivy@example.test", request_id="req-1")
    assert sorted((m.tenant.slug, m.role) for m in joined) == [("acme", "viewer"), ("globex", "admin")]
    assert accept_open_invitations(ivy, "ivy@example.test", request_id="req-2") == []
    assert set(Invitation.unscoped_objects.values_list("accepted_by", flat=True)) == {ivy.pk}
    added = AuditEvent.objects.unscoped().filter(action="member.add")
    assert {(e.actor_id, e.request_id) for e in added} == {(ivy.pk, "req-1")}


def test_revoked_expired_and_other_addresses_invitations_are_left(acme: Tenant, globex: Tenant, charlie: User) -> None:
    revoke_invitation(invite(acme), actor=None)
    expired = invite(globex)
    Invitation.unscoped_objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    invite(acme, email="someone@example.test")
    ivy = User.objects.create_user("ivy", email="ivy@example.test")
    assert accept_open_invitations(ivy, "ivy@example.test", request_id="r") == []
    assert not Membership.objects.unscoped().filter(user=ivy).exists()


def test_an_owner_invitation_from_staff_makes_an_owner(acme: Tenant, staff: User) -> None:
    create_invitation(acme, email="ivy@example.test", role="owner", invited_by=staff, actor=staff_principal(staff.pk))
    ivy = User.objects.create_user("ivy", email="ivy@example.test")
    assert [m.role for m in accept_open_invitations(ivy, "ivy@example.test", request_id="r")] == ["owner"]


def test_an_invitation_to_a_tenant_already_joined_stays_open(acme: Tenant) -> None:
    invitation = invite(acme, "admin")
    ivy = User.objects.create_user("ivy", email="ivy@example.test")
    Membership.unscoped_objects.create(tenant=acme, user=ivy, role="member")  # joined since, another way
    assert accept_open_invitations(ivy, "ivy@example.test", request_id="r") == []
    invitation.refresh_from_db()
    assert invitation.is_open
    assert Membership.objects.for_tenant(acme).get(user=ivy).role == "member"
