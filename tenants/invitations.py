"""Invite someone to a tenant by email, and accept the invitation (console only; membership itself goes through
``tenants.services.add_member``, the same function the REST API calls).

Invitations never grant the owner role: owners are made by an owner, from the members page, once the person
has joined. The invitee must be signed in with the invited email address, so a forwarded link is useless; someone
with no account for that address yet picks a username and password on the link's page, which creates the account
(with the invited email) and accepts the invitation in one transaction (``accept_invitation_as_new_user``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from controlplane.audit import record_audit
from tenants import services
from tenants.models import Invitation, Membership, Role, Tenant

if TYPE_CHECKING:
    from controlplane.access import Principal

INVITABLE_ROLES = (Role.VIEWER, Role.MEMBER, Role.ADMIN)


class InvitationInvalid(Exception):
    """The link is unknown, used, revoked or expired, or belongs to another email address."""


def create_invitation(
    tenant: Tenant, *, email: str, role: str, invited_by: User | None, by: Principal | None, audit_from: Any = None
) -> tuple[Invitation, str]:
    """Record an invitation; returns it with the token for the link (shown once, never stored)."""
    email = email.strip().lower()
    if role not in INVITABLE_ROLES:
        raise ValidationError(
            {"role": ["invitations grant viewer, member or admin; make owners from the members page"]}
        )
    if Membership.objects.for_tenant(tenant).filter(user__email__iexact=email).exists():
        raise ValidationError({"email": [f"{email} is already a member of this tenant"]})
    token, token_hash = Invitation.new_token()
    with transaction.atomic():
        invitation = Invitation.unscoped_objects.create(
            tenant=tenant, email=email, role=role, token_hash=token_hash, invited_by=invited_by
        )
        record_audit(audit_from or by, tenant, "invitation.create", invitation, {"email": email, "role": role})
    return invitation, token


def find_open_invitation(token: str) -> Invitation:
    invitation = (
        Invitation.unscoped_objects.select_related("tenant", "invited_by")
        .filter(token_hash=Invitation.hash_token(token))
        .first()
    )
    if invitation is None or not invitation.is_open:
        raise InvitationInvalid("this invitation link is not valid any more; ask for a new one")
    return invitation


def accept_invitation(token: str, *, user: User, audit_from: Any = None) -> Membership:
    """Make ``user`` a member with the invited role; the invitation is claimed once (a second accept fails)."""
    invitation = find_open_invitation(token)
    if (user.email or "").strip().lower() != invitation.email:
        raise InvitationInvalid(f"this invitation is for {invitation.email}; sign in with that address")
    with transaction.atomic():
        # Claim by conditional UPDATE: two tabs accepting at once make one membership.
        claimed = Invitation.unscoped_objects.filter(
            pk=invitation.pk, accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now()
        ).update(accepted_at=timezone.now(), accepted_by=user)
        if not claimed:
            raise InvitationInvalid("this invitation was already used")
        try:
            return services.add_member(invitation.tenant, user=user, role=invitation.role, audit_from=audit_from)
        except services.Conflict as exc:
            raise InvitationInvalid(str(exc.detail)) from exc


def account_exists(email: str) -> bool:
    """Whether some account already uses ``email`` (its owner must sign in to accept, not make a second account)."""
    return User.objects.filter(email__iexact=email.strip()).exists()


def accept_invitation_as_new_user(token: str, *, username: str, password: str, audit_from: Any = None) -> Membership:
    """Create an account with the invited email, ``username`` and ``password``, and accept the invitation with it.

    One transaction: if the invitation turns out to be used (a second tab, a replayed form), the account is not
    created either. Refused when an account already has the invited email: its owner signs in instead. Raises
    ``ValidationError`` on ``username`` / ``password`` (Django's password validators) or ``InvitationInvalid``.
    """
    invitation = find_open_invitation(token)
    with transaction.atomic():
        # Race: two sign-ups on one link at once; the invitation's row lock makes the second see the first's account.
        Invitation.unscoped_objects.select_for_update().filter(pk=invitation.pk).first()
        if account_exists(invitation.email):
            raise InvitationInvalid(f"an account already uses {invitation.email}; sign in to accept")
        user = User(username=username.strip(), email=invitation.email)
        try:
            user.full_clean(exclude=["password"])
        except ValidationError as exc:
            raise ValidationError({"username": exc.message_dict.get("username", exc.messages)}) from exc
        try:
            validate_password(password, user)
        except ValidationError as exc:
            raise ValidationError({"password": exc.messages}) from exc
        user.set_password(password)
        user.save()
        # Claims the invitation by conditional UPDATE; a refusal rolls the new account back with it.
        return accept_invitation(token, user=user, audit_from=audit_from)


def revoke_invitation(invitation: Invitation, *, by: Principal | None, audit_from: Any = None) -> bool:
    """Withdraw an open invitation; False when it was no longer open."""
    with transaction.atomic():
        revoked = Invitation.unscoped_objects.filter(
            pk=invitation.pk, accepted_at__isnull=True, revoked_at__isnull=True
        ).update(revoked_at=timezone.now())
        if revoked:
            record_audit(
                audit_from or by, invitation.tenant, "invitation.revoke", invitation, {"email": invitation.email}
            )
    return bool(revoked)
