"""Invite someone to a tenant by email, and accept the invitation (console only; membership itself goes through
``tenants.services.add_member``, the same function the REST API calls).

Invitations from a tenant's admins never grant the owner role: owners are made by an owner, from the members page,
once the person has joined. Platform staff alone invite a tenant's owner (when they create the tenant for someone);
such an invitation carries staff's grant, so its invitee accepts it as the owner-to-be. The invitee must be signed
in with the invited email address, so a forwarded link is useless; someone with no account for that address yet
picks a username and password on the link's page, which creates the account (with the invited email) and accepts
the invitation in one transaction (``accept_invitation_as_new_user``).

The actor convention is ``tenants.services``'s: ``actor`` (keyword-only, required; ``None`` is the system) is the
acting principal and ``request_id`` the request's id for the audit event. Accepting is the exception: the invitee
acts for themselves, so the accepting ``user`` is the actor. Refusals of input are ``Invalid`` (field messages);
a link that cannot be used is ``InvitationInvalid``.
"""

from __future__ import annotations

from dataclasses import replace

from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from controlplane.access import Principal, principal_for
from controlplane.audit import record_audit
from controlplane.domain_errors import Conflict, Forbidden, Invalid
from tenants import services
from tenants.models import Invitation, Membership, Role, Tenant

INVITABLE_ROLES = (Role.VIEWER, Role.MEMBER, Role.ADMIN)


class InvitationInvalid(Exception):
    """The link is unknown, used, revoked or expired, or belongs to another email address."""


def create_invitation(
    tenant: Tenant, *, email: str, role: str, invited_by: User | None, actor: Principal | None, request_id: str = ""
) -> tuple[Invitation, str]:
    """Record an invitation; returns it with the token for the link (shown once, never stored).

    ``role`` is one of ``INVITABLE_ROLES``, or ``owner`` when ``actor`` is platform staff.
    """
    email = email.strip().lower()
    staff_invites_owner = role == Role.OWNER and actor is not None and actor.is_staff
    if role not in INVITABLE_ROLES and not staff_invites_owner:
        raise Invalid({"role": ["invitations grant viewer, member or admin; make owners from the members page"]})
    if Membership.objects.for_tenant(tenant).filter(user__email__iexact=email).exists():
        raise Invalid({"email": [f"{email} is already a member of this tenant"]})
    token, token_hash = Invitation.new_token()
    with transaction.atomic():
        invitation = Invitation.unscoped_objects.create(
            tenant=tenant, email=email, role=role, token_hash=token_hash, invited_by=invited_by
        )
        changes = {"email": email, "role": role}
        record_audit(actor, tenant, "invitation.create", invitation, changes, request_id=request_id)
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


def accept_invitation(token: str, *, user: User, request_id: str = "") -> Membership:
    """Make ``user`` a member with the invited role; the invitation is claimed once (a second accept fails).

    ``user`` is the actor: the membership is added on their behalf, with the invitation as their permission.
    """
    invitation = find_open_invitation(token)
    if (user.email or "").strip().lower() != invitation.email:
        raise InvitationInvalid(f"this invitation is for {invitation.email}; sign in with that address")
    return join_by_invitation(invitation, user=user, request_id=request_id)


def join_by_invitation(invitation: Invitation, *, user: User, request_id: str = "") -> Membership:
    """Claim ``invitation`` for ``user`` (who showed they hold its address) and make them a member with its role.

    The claim is a conditional UPDATE (two tabs, or two sign-ins, accepting at once make one membership); a refusal
    (already used, already a member) raises ``InvitationInvalid`` and rolls the claim back.
    """
    with transaction.atomic():
        claimed = Invitation.unscoped_objects.filter(
            pk=invitation.pk, accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now()
        ).update(accepted_at=timezone.now(), accepted_by=user)
        if not claimed:
            raise InvitationInvalid("this invitation was already used")
        actor = principal_for(user, None, invitation.tenant)
        if invitation.role == Role.OWNER:  # only staff issue these (create_invitation): the grant is theirs
            actor = replace(actor, role=Role.OWNER)
        try:
            return services.add_member(
                invitation.tenant, user=user, role=invitation.role, actor=actor, request_id=request_id
            )
        except (Conflict, Forbidden) as exc:  # already a member; an invitation that would grant the owner role
            raise InvitationInvalid(exc.message) from exc


def account_exists(email: str) -> bool:
    """Whether some account already uses ``email`` (its owner must sign in to accept, not make a second account)."""
    return User.objects.filter(email__iexact=email.strip()).exists()


def accept_invitation_as_new_user(token: str, *, username: str, password: str, request_id: str = "") -> Membership:
    """Create an account with the invited email, ``username`` and ``password``, and accept the invitation with it.

    One transaction: if the invitation turns out to be used (a second tab, a replayed form), the account is not
    created either. Refused when an account already has the invited email: its owner signs in instead. Raises
    ``Invalid`` on ``username`` / ``password`` (Django's password validators) or ``InvitationInvalid``.
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
            raise Invalid({"username": exc.message_dict.get("username", exc.messages)}) from exc
        try:
            validate_password(password, user)
        except ValidationError as exc:
            raise Invalid({"password": exc.messages}) from exc
        user.set_password(password)
        user.save()
        # Claims the invitation by conditional UPDATE; a refusal rolls the new account back with it.
        return accept_invitation(token, user=user, request_id=request_id)


def revoke_invitation(invitation: Invitation, *, actor: Principal | None, request_id: str = "") -> bool:
    """Withdraw an open invitation; False when it was no longer open."""
    with transaction.atomic():
        revoked = Invitation.unscoped_objects.filter(
            pk=invitation.pk, accepted_at__isnull=True, revoked_at__isnull=True
        ).update(revoked_at=timezone.now())
        if revoked:
            changes = {"email": invitation.email}
            record_audit(actor, invitation.tenant, "invitation.revoke", invitation, changes, request_id=request_id)
    return bool(revoked)
