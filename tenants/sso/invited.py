"""Open invitations accepted at sign-in through the provider.

An invitation is for an e-mail address, and the invitee must show they hold it (``tenants.invitations``: signed in
with that address). A sign-in through the provider with that address verified shows it, so every open invitation
for it is accepted then, with the invited role, as if the invitee had pressed "Accept" on each link: the same
``tenants.invitations.join_by_invitation`` (one conditional UPDATE, so two sign-ins racing make one membership; the
invitee the actor, with the owner's grant of an owner invitation, which only staff issue). There the link's token
finds the invitation; here the verified address finds them.
"""

from __future__ import annotations

import logging

from django.contrib.auth.models import User
from django.utils import timezone

from tenants.invitations import InvitationInvalid, join_by_invitation
from tenants.models import Invitation, Membership

log = logging.getLogger(__name__)


def accept_open_invitations(user: User, email: str, *, request_id: str) -> list[Membership]:
    """Accept every open invitation for ``email`` (verified by the provider) as ``user``; the memberships made."""
    joined: list[Membership] = []
    candidates = Invitation.unscoped_objects.select_related("tenant").filter(email__iexact=email)
    for invitation in candidates.filter(
        accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now()
    ):
        try:
            joined.append(join_by_invitation(invitation, user=user, request_id=request_id))
        except InvitationInvalid as exc:  # used meanwhile, or already a member: left as it is
            log.info("invitation %s left open: %s", invitation.pk, exc)
    return joined
