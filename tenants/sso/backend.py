"""The console's one authentication backend: the OpenID Connect code flow, and passwords while they are allowed.

One backend, not two, because Django's ``login(request, user)`` without a backend argument (the invitation page's
sign-up) refuses to guess among several. It is mozilla-django-oidc's backend (which is Django's ``ModelBackend``, so
permissions work as before) with:

- its settings and endpoints from ``tenants.sso.provider`` (read when a sign-in needs them, never at start-up);
- the ID token's ``iss`` and ``aud`` checked (the library checks the signature, expiry and nonce, not those), and
  the userinfo answer's ``sub`` held to the token's;
- the account chosen by ``tenants.sso.accounts`` (verified e-mail only), open invitations accepted
  (``tenants.sso.invited``) and the group claim applied (``tenants.sso.claims``), in one transaction.

A refusal is ``SignInRefused`` with a message for the person, which the callback view shows them.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import User
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.http import HttpRequest
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from tenants.sso import claims as claims_mapping
from tenants.sso.accounts import SignInRefused, account_for, verified_email
from tenants.sso.invited import accept_open_invitations
from tenants.sso.provider import current, library_setting

log = logging.getLogger(__name__)


def password_sign_in_enabled() -> bool:
    return bool(getattr(settings, "FRONTDOOR_PASSWORD_SIGN_IN", True))


class SignInBackend(OIDCAuthenticationBackend):  # type: ignore[misc]
    """Passwords (unless ``FRONTDOOR_PASSWORD_SIGN_IN`` is off) and the provider's code flow."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The library's __init__ reads every endpoint: Django makes a backend for each signed-in request, which must
        # not need the provider. The endpoints are properties below, read only during a sign-in.
        self.UserModel = get_user_model()

    get_settings = staticmethod(library_setting)

    # The attributes the library reads, each answered when read (tenants.sso.provider).
    @property
    def OIDC_OP_TOKEN_ENDPOINT(self) -> str:
        return str(library_setting("OIDC_OP_TOKEN_ENDPOINT"))

    @property
    def OIDC_OP_USER_ENDPOINT(self) -> str:
        return str(library_setting("OIDC_OP_USER_ENDPOINT"))

    @property
    def OIDC_OP_JWKS_ENDPOINT(self) -> str:
        return str(library_setting("OIDC_OP_JWKS_ENDPOINT"))

    @property
    def OIDC_RP_CLIENT_ID(self) -> str:
        return str(library_setting("OIDC_RP_CLIENT_ID"))

    @property
    def OIDC_RP_CLIENT_SECRET(self) -> str:
        return str(library_setting("OIDC_RP_CLIENT_SECRET"))

    @property
    def OIDC_RP_SIGN_ALGO(self) -> str:
        return str(library_setting("OIDC_RP_SIGN_ALGO"))

    @property
    def OIDC_RP_IDP_SIGN_KEY(self) -> None:  # keys come from the provider's JWKS
        return None

    def authenticate(  # type: ignore[override]
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> User | None:
        if username is not None or password is not None:
            if not password_sign_in_enabled():
                return None
            return ModelBackend.authenticate(self, request, username=username, password=password, **kwargs)
        if current() is None or request is None:
            return None
        return super().authenticate(request, **kwargs)  # type: ignore[no-any-return]

    def get_user(self, user_id: int) -> User | None:
        # Django's check, not the library's: a deactivated account's sessions stop working.
        return ModelBackend.get_user(self, user_id)  # type: ignore[return-value]

    def verify_token(self, token: str, **kwargs: Any) -> dict[str, Any]:
        payload: dict[str, Any] = super().verify_token(token, **kwargs)
        config = current()
        assert config is not None  # authenticate() runs the flow only when configured
        audience = payload.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience if isinstance(audience, list) else []
        if payload.get("iss") != config.issuer:
            raise SuspiciousOperation(f"ID token issued by {payload.get('iss')!r}, not {config.issuer!r}")
        if config.client_id not in audiences:
            raise SuspiciousOperation("ID token issued for another client")
        if len(audiences) > 1 and payload.get("azp") != config.client_id:
            raise SuspiciousOperation("ID token for several audiences without this client as its azp")
        return payload

    def get_userinfo(self, access_token: str, id_token: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The ID token's claims with the userinfo endpoint's over them (some providers put groups in only one)."""
        userinfo = super().get_userinfo(access_token, id_token, payload)
        if not isinstance(userinfo, dict) or userinfo.get("sub") != payload.get("sub"):
            raise SuspiciousOperation("the userinfo answer is about someone else than the ID token")
        return {**payload, **userinfo}

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        return True  # get_or_create_user checks them, with reasons a person can act on

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict[str, Any]) -> User:
        config = current()
        assert config is not None
        claims = self.get_userinfo(access_token, id_token, payload)
        email = verified_email(claims)
        request_id = str(getattr(self.request, "request_id", "") or "")
        with transaction.atomic():
            user, created = account_for(email, create_users=config.create_users)
            if created:
                log.info("single sign-on made account %s for a verified address", user.pk)
            accept_open_invitations(user, email, request_id=request_id)
            claims_mapping.apply_claims(user, claims, config, request_id=request_id)
        return user


__all__ = ["SignInBackend", "SignInRefused", "password_sign_in_enabled"]
