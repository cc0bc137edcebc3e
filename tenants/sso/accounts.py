"""Which account a provider's claims sign in as: the one whose e-mail matches a verified ``email`` claim.

The provider vouches for an address only when it says ``email_verified``; an address it has not verified could be
anyone's (many providers let people type any address), so it signs in as no one: it never links to an existing
account, nor makes a new one. A verified address signs in as the one account with that address (case-insensitive);
several accounts with it are refused rather than one picked. Without an account, one is made when
``FRONTDOOR_OIDC_CREATE_USERS`` allows it, or when an open invitation is waiting for that address (the invitation
is the permission). Its username is the address, made valid and unique.
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import connection

from tenants.models import Invitation

MAX_EMAIL = 254
_NOT_IN_USERNAMES = re.compile(r"[^\w.@+-]")


class SignInRefused(Exception):
    """The provider signed someone in whom the console refuses; the message says why, to them."""


def verified_email(claims: dict[str, Any]) -> str:
    """The claims' e-mail address, lower-cased, when the provider verified it; ``SignInRefused`` otherwise."""
    email = claims.get("email")
    if not isinstance(email, str) or not email.strip():
        raise SignInRefused("The provider sent no e-mail address. Ask your administrator to release the email scope.")
    email = email.strip().lower()
    try:
        if len(email) > MAX_EMAIL:
            raise ValidationError("too long")
        validate_email(email)
    except ValidationError as exc:
        raise SignInRefused("The provider sent an e-mail address the console cannot use.") from exc
    # Some providers send the flag as the string "true"; anything else (absent, false, "false") is unverified.
    verified = claims.get("email_verified")
    if not (verified is True or (isinstance(verified, str) and verified.lower() == "true")):
        raise SignInRefused(f"The provider has not verified {email}. Verify the address there, then sign in again.")
    return email


def _free_username(email: str) -> str:
    base = _NOT_IN_USERNAMES.sub("-", email)[:150]
    taken = set(User.objects.filter(username__startswith=base[:140]).values_list("username", flat=True))
    if base not in taken:
        return base
    suffix = 2
    while f"{base[:140]}-{suffix}" in taken:
        suffix += 1
    return f"{base[:140]}-{suffix}"


def account_for(email: str, *, create_users: bool) -> tuple[User, bool]:
    """The account ``email`` (verified) signs in as, and whether it was made now; ``SignInRefused`` otherwise.

    Call it inside a transaction (the backend's): the lock against a concurrent first sign-in lasts until it ends.
    """
    with connection.cursor() as cursor:
        # Race: two first sign-ins with one address at once would make two accounts; this lock, held until the
        # caller's transaction ends, makes the second find the first's.
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"sso-account:{email}"])
    matches = list(User.objects.filter(email__iexact=email)[:2])
    if len(matches) > 1:
        raise SignInRefused(f"Several accounts use {email}. Ask platform staff to keep one.")
    if matches:
        if not matches[0].is_active:
            raise SignInRefused("This account is disabled.")
        return matches[0], False
    if not create_users and not _is_invited(email):
        raise SignInRefused(f"No account uses {email}. Ask to be invited.")
    user = User.objects.create_user(_free_username(email), email=email)
    return user, True


def _is_invited(email: str) -> bool:
    return any(invitation.is_open for invitation in Invitation.unscoped_objects.filter(email__iexact=email))
