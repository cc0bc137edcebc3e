"""Staff open a tenant for someone: the tenant, its starting quota and an invitation for its first owner.

``create_tenant_for_owner`` runs ``tenants.services.create_tenant``, ``tenants.services.update_quota`` and
``tenants.invitations.create_invitation`` (the functions the REST API and the members page call, each with its audit
event) in one transaction: when any of them refuses, or another request takes the slug meanwhile, nothing of the
tenant stays behind. ``send_owner_invitation`` then mails the link through Django's e-mail backend (the ``EMAIL_*``
settings), after the commit, so a refused tenant sends nothing. The token travels in the link only: it is neither
stored nor logged.

The actor convention is ``tenants.services``'s: ``actor`` is the acting (staff) principal, ``request_id`` the
request's id for the audit events. Refusals are ``controlplane.domain_errors.Invalid`` with field messages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.contrib.auth.models import User
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string

from controlplane.domain_errors import Invalid
from quotas.models import Quota
from tenants import invitations, services
from tenants.models import Invitation, Role, Tenant

if TYPE_CHECKING:
    from controlplane.access import Principal

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewTenant:
    """A tenant just created, with its owner's open invitation and the token of the invitation's link."""

    tenant: Tenant
    invitation: Invitation
    token: str


def create_tenant_for_owner(
    *,
    slug: str,
    name: str,
    owner_email: str,
    quota: dict[str, Any],
    invited_by: User,
    actor: Principal,
    request_id: str = "",
) -> NewTenant:
    """Create the tenant with ``quota`` (every quota field, as ``update_quota`` takes them) and invite its owner."""
    try:
        with transaction.atomic():
            tenant = services.create_tenant(slug=slug, name=name, actor=actor, request_id=request_id)
            starting = Quota.objects.for_tenant(tenant).select_related("tenant").get()
            services.update_quota(starting, changes=quota, actor=actor, request_id=request_id)
            invitation, token = invitations.create_invitation(
                tenant, email=owner_email, role=Role.OWNER, invited_by=invited_by, actor=actor, request_id=request_id
            )
    except IntegrityError:
        # Race: another request created a tenant with this slug between the model's check and the insert.
        if Tenant.objects.filter(slug=slug).exists():
            raise Invalid({"slug": [f"a tenant with the slug '{slug}' already exists"]}) from None
        raise
    return NewTenant(tenant, invitation, token)


def send_owner_invitation(new: NewTenant, *, link: str) -> bool:
    """Mail the invitation's ``link`` to the future owner; False (logged, without the link) when sending failed."""
    invitation = new.invitation
    inviter = invitation.invited_by
    context = {
        "tenant": new.tenant,
        "email": invitation.email,
        "inviter": (inviter.get_full_name() or inviter.get_username()) if inviter else "Platform staff",
        "link": link,
        "expires_at": invitation.expires_at,
    }
    subject = f"You are invited to own {new.tenant.name} on Frontdoor"
    body = render_to_string("tenants/staff_invitation_email.txt", context)
    try:
        send_mail(subject, body, None, [invitation.email])
    except OSError as exc:  # smtplib's errors are OSErrors, and so are refused or timed-out connections
        logger.warning("the owner invitation of tenant %s could not be mailed: %s", new.tenant.slug, exc)
        return False
    return True
